#!/usr/bin/env bash
# Start a Docker-API engine without Docker: `podman system service` (runc, cgroupfs) on a unix socket, for the
# docker launcher's integration test and for trying the launcher locally. Idempotent; prints the socket URL.
#
#   scripts/podman_service.sh [STATE_DIR]      # default /tmp/helical-podman; stop: scripts/podman_service.sh --stop
#   export DOCKER_HOST=$(scripts/podman_service.sh)
set -euo pipefail
state="${HELICAL_PODMAN_DIR:-/tmp/helical-podman}"
[ "${1:-}" = "--stop" ] && { [ -f "$state/service.pid" ] && kill "$(cat "$state/service.pid")" 2>/dev/null; rm -f "$state/service.pid"; exit 0; }
[ -n "${1:-}" ] && state="$1"
for bin in podman runc; do
  command -v "$bin" >/dev/null || { echo "error: $bin not found; fix: apt-get install podman runc" >&2; exit 1; }
done
mkdir -p "$state"
sock="$state/podman.sock"
# nofile/nproc limits the sandbox allows (podman's defaults ask for more than some containers may set)
cat > "$state/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
export CONTAINERS_CONF="$state/containers.conf"
if [ -f "$state/service.pid" ] && kill -0 "$(cat "$state/service.pid")" 2>/dev/null && [ -S "$sock" ]; then
  echo "unix://$sock"; exit 0
fi
rm -f "$sock"
setsid podman --runtime runc --cgroup-manager=cgroupfs system service --time=0 "unix://$sock" \
  >"$state/service.log" 2>&1 < /dev/null &
echo $! > "$state/service.pid"
for _ in $(seq 1 100); do
  [ -S "$sock" ] && curl -sf --unix-socket "$sock" http://d/_ping >/dev/null 2>&1 && { echo "unix://$sock"; exit 0; }
  sleep 0.1
done
echo "error: podman service did not answer on $sock; see $state/service.log" >&2
exit 1
