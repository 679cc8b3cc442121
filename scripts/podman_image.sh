#!/usr/bin/env bash
# Build a runner image with no registry: a minimal Debian root filesystem (debootstrap) imported into podman.
# Python and the project's environment are bind-mounted read-only at run time (the docker launcher's
# HELICAL_AIRFLOW_DOCKER_EXTRA_MOUNTS), so the image only needs the shared libraries torch and Python use.
# Like deploy/docker/Dockerfile's runner, its ENTRYPOINT is helical-airflow (the launcher passes only arguments).
#
#   scripts/podman_image.sh [NAME]     # default helical-airflow-runner:podman-test; idempotent
# Env: HELICAL_VENV (default: the repo's .venv) decides the PATH baked into the image.
set -euo pipefail
name="${1:-helical-airflow-runner:podman-test}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${HELICAL_VENV:-$here/.venv}"
state="${HELICAL_PODMAN_DIR:-/tmp/helical-podman}"
export CONTAINERS_CONF="$state/containers.conf"
[ -f "$CONTAINERS_CONF" ] || { echo "error: start the service first: scripts/podman_service.sh" >&2; exit 1; }
# Reuse the image only if it points at this checkout's venv: the PATH is baked in, and another clone
# (CI runs in a fresh one) would otherwise get an image whose helical-airflow is not mounted.
if podman image exists "$name"; then
  if podman image inspect --format '{{.Config.Env}} {{.Config.Entrypoint}}' "$name" \
     | grep -q "PATH=$venv/bin:.*\[helical-airflow\]"; then echo "$name"; exit 0; fi
  podman rmi -f "$name" >/dev/null
fi
command -v debootstrap >/dev/null || { echo "error: debootstrap not found; fix: apt-get install debootstrap" >&2; exit 1; }
# the mirror apt already uses (deb822 .sources or sources.list), so this works where apt works
mirror="$(grep -rhE '^(URIs:|deb )' /etc/apt/sources.list.d/ /etc/apt/sources.list 2>/dev/null \
  | grep -oE 'https?://[^ ]+/debian/?' | head -1 || true)"
mirror="${mirror:-http://deb.debian.org/debian}"
rootfs="$state/rootfs"
tarball="$state/rootfs.tar"
if [ ! -f "$tarball" ]; then
  rm -rf "$rootfs"
  debootstrap --variant=minbase --include=libgomp1,libstdc++6,libssl3,libffi8,libsqlite3-0,ca-certificates \
    bookworm "$rootfs" "$mirror" >"$state/debootstrap.log" 2>&1 \
    || { echo "error: debootstrap failed; see $state/debootstrap.log" >&2; exit 1; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -cf "$tarball" .
  rm -rf "$rootfs"
fi
podman import --change "ENV PATH=$venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
  --change "ENV PYTHONUNBUFFERED=1" --change 'ENTRYPOINT ["helical-airflow"]' --change 'CMD ["--help"]' \
  "$tarball" "$name" >/dev/null
echo "$name"
