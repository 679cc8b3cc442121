#!/usr/bin/env bash
# System packages the integration tests use: Redis (Celery broker), Prometheus + promtool, Alertmanager
# + amtool, node-exporter, podman + runc + debootstrap (Docker launcher against a Docker-API engine).
# PostgreSQL's server binaries (initdb, pg_ctl) come from the distribution's postgresql package.
# Idempotent: installs only what is missing; needs root (or sudo) for apt-get.
set -euo pipefail
need=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/lib/postgresql/15/bin/$1" ]; }
have redis-server || need+=(redis-server)
have prometheus || need+=(prometheus)
have promtool || need+=(prometheus)
have prometheus-alertmanager || need+=(prometheus-alertmanager)
have prometheus-node-exporter || need+=(prometheus-node-exporter)
have podman || need+=(podman)
have runc || need+=(runc)
have debootstrap || need+=(debootstrap)
have initdb || need+=(postgresql)
[ ${#need[@]} = 0 ] && exit 0
sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
echo "[test deps] installing: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# --no-install-recommends keeps it small; the packages' own services are not started (policy-rc.d).
$sudo apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${need[@]}" | sort -u) >/dev/null
