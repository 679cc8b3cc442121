#!/usr/bin/env bash
# The compose stack's one-shot `airflow-init`, run as root (user 0:0) like the official Airflow compose file's
# init: warn about too little memory/CPU/disk, create the folders the stack writes and hand them to AIRFLOW_UID
# (group 0), then, as AIRFLOW_UID, migrate the metadata DB, create the pools of the models' profiles and write
# the simple auth manager's password file from the admin password secret.
#
# Why root: Docker seeds a new named volume with the owner and mode of the image's folder, and a bind-mounted
# folder Docker creates is owned by root. Without this chown a user whose uid is neither the image's (50000)
# nor 0 could not write the logs, the weights cache or the outputs.
#
# Env: AIRFLOW_UID (required), HELICAL_INIT_DIRS (space-separated folders to own; default below),
#      HELICAL_INIT_SKIP_AIRFLOW=1 (only the folders: the permission test runs it that way),
#      HELICAL_ADMIN_PASSWORD_FILE (default /run/secrets/airflow_admin_password), HELICAL_PASSWORDS_FILE
#      (default /opt/airflow/secrets/passwords.json, the simple auth manager's file), GPU_POOL_SLOTS.
set -euo pipefail
dirs="${HELICAL_INIT_DIRS:-/opt/airflow/logs /opt/airflow/secrets /opt/helical-cache /opt/outputs}"
uid="${AIRFLOW_UID:-}"
if [[ -z "$uid" || "$uid" == 0 ]]; then
  echo "error: AIRFLOW_UID is ${uid:-not set}; run deploy/docker/init-env.sh (it writes your uid to .env)" >&2
  exit 1
fi
[[ "$(id -u)" == 0 ]] || { echo "error: airflow-init must run as root (user: \"0:0\") to own its folders" >&2; exit 1; }

# --- resources (the official compose file's checks) ---------------------------------------------------------
one_meg=1048576
mem_mb=$(($(getconf _PHYS_PAGES) * $(getconf PAGE_SIZE) / one_meg))
cpus=$(grep -cE 'cpu[0-9]+' /proc/stat || echo 1)
disk_kb=$(df -Pk / | awk 'NR==2 {print $4}')
low=""
((mem_mb >= 4000)) || low+=" memory ${mem_mb} MB (< 4 GB);"
((cpus >= 2)) || low+=" ${cpus} CPU (< 2);"
((disk_kb >= 10 * one_meg)) || low+=" disk $((disk_kb / 1024)) MB free (< 10 GB);"
[[ -z "$low" ]] || echo "WARNING: not enough resources for Airflow:$low give Docker more (docs/airflow.md)" >&2

# --- folders: owned by AIRFLOW_UID, group 0, group-writable ---------------------------------------------------
for dir in $dirs; do
  mkdir -p "$dir"
  chown -R "$uid:0" "$dir"
  chmod -R u+rwX,g+rwX "$dir"
  [[ "$(basename "$dir")" != secrets ]] || chmod 0770 "$dir"  # the admin password file: not for others
done
# shellcheck disable=SC2086  # $dirs is a space-separated list on purpose
ls -ld $dirs
[[ "${HELICAL_INIT_SKIP_AIRFLOW:-0}" == 1 ]] && exit 0

# --- Airflow, as AIRFLOW_UID (never as root) --------------------------------------------------------------------
as_user=(setpriv --reuid "$uid" --regid 0 --clear-groups -- env HOME="${AIRFLOW_USER_HOME_DIR:-/home/airflow}")
password_file="${HELICAL_ADMIN_PASSWORD_FILE:-/run/secrets/airflow_admin_password}"
"${as_user[@]}" python -m helical_airflow.stack.bootstrap "${GPU_POOL_SLOTS:-1}"
# the simple auth manager reads (and may append to) this file: it lives on the airflow-secrets volume
"${as_user[@]}" python - "$password_file" "${HELICAL_PASSWORDS_FILE:-/opt/airflow/secrets/passwords.json}" <<'PY'
import json, os, sys
password = open(sys.argv[1]).read().strip()
fd = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w") as out:
    json.dump({"admin": password}, out)
PY
echo "Airflow is initialised; user admin (password: secrets/airflow_admin_password beside .env)"
