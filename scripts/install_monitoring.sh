#!/usr/bin/env bash
# Installs the monitoring binaries the local stack and the tests use, from Debian's apt:
# prometheus + promtool, alertmanager + amtool, node-exporter. Idempotent: does nothing when all are present.
# Not installable from apt (the Docker stack runs them as images): statsd_exporter, Grafana, cAdvisor,
# Loki, Promtail. Without statsd_exporter the local stack uses helical_airflow.statsd_bridge instead.
set -euo pipefail

need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v amtool >/dev/null 2>&1 || need+=(prometheus-alertmanager)
command -v prometheus-node-exporter >/dev/null 2>&1 || need+=(prometheus-node-exporter)

if [ ${#need[@]} -eq 0 ]; then
  echo "monitoring binaries already installed: $(command -v promtool amtool prometheus-node-exporter | tr '\n' ' ')"
  exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
# The packages ship services; on CI runners and containers we only want the binaries, never a running daemon.
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
# Debian starts the daemons where systemd runs (CI VMs); the tests start their own on private ports.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  $SUDO systemctl disable --now prometheus prometheus-alertmanager prometheus-node-exporter >/dev/null 2>&1 || true
fi
promtool --version | head -1
amtool --version 2>&1 | head -1
