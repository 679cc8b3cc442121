#!/usr/bin/env bash
# First set-up of the Docker Compose stack: writes .env (mode 0600) from .env.example with freshly generated
# secrets, and prints the Airflow and Grafana passwords once. Never overwrites an existing .env.
#
#   deploy/docker/init-env.sh && docker compose up -d --build
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
env_file="${HELICAL_ENV_FILE:-$root/.env}"
if [ -f "$env_file" ]; then echo "$env_file exists; keeping it (delete it to generate new secrets)"; exit 0; fi
rand() { python3 -c "import secrets; print(secrets.token_urlsafe($1))"; }
fernet() { python3 -c "import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())"; }
docker_gid="$(stat -c %g /var/run/docker.sock 2>/dev/null || echo 0)"
admin="$(rand 12)"; grafana="$(rand 12)"
umask 077
sed -e "s|^AIRFLOW_UID=.*|AIRFLOW_UID=$(id -u)|" \
    -e "s|^DOCKER_GID=.*|DOCKER_GID=$docker_gid|" \
    -e "s|^HELICAL_HOST_DATA_DIR=.*|HELICAL_HOST_DATA_DIR=$root/data|" \
    -e "s|^POSTGRES_PASSWORD=.*|POSTGRES_PASSWORD=$(rand 18)|" \
    -e "s|^REDIS_PASSWORD=.*|REDIS_PASSWORD=$(rand 18)|" \
    -e "s|^AIRFLOW_ADMIN_PASSWORD=.*|AIRFLOW_ADMIN_PASSWORD=$admin|" \
    -e "s|^AIRFLOW_FERNET_KEY=.*|AIRFLOW_FERNET_KEY=$(fernet)|" \
    -e "s|^AIRFLOW_JWT_SECRET=.*|AIRFLOW_JWT_SECRET=$(rand 32)|" \
    -e "s|^AIRFLOW_API_SECRET_KEY=.*|AIRFLOW_API_SECRET_KEY=$(rand 32)|" \
    -e "s|^GRAFANA_ADMIN_PASSWORD=.*|GRAFANA_ADMIN_PASSWORD=$grafana|" \
    "$root/.env.example" > "$env_file"
chmod 600 "$env_file"
mkdir -p "$root/data/incoming" "$root/data/outputs"
echo "wrote $env_file (mode 0600). Shown once:"
echo "  Airflow  http://localhost:8080  user admin  password $admin"
echo "  Grafana  http://localhost:3000  user admin  password $grafana"
