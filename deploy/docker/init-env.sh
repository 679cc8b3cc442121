#!/usr/bin/env bash
# First set-up of the Docker Compose stack, idempotent:
#   .env       settings (mode 0600) from .env.example: your uid, the host folders, the secrets folder
#   secrets/   one file per generated secret (folder 0700), handed to the containers as Compose secrets,
#              never as environment variables or command-line arguments
# Prints the Airflow and Grafana passwords once. Never overwrites an existing secret; an .env of an older
# version gets the settings it lacks, and the secrets it held move into secrets/ (same values).
#
#   deploy/docker/init-env.sh && docker compose up -d --build
# Env: HELICAL_ENV_FILE (default ./.env), HELICAL_SECRETS_DIR (default: secrets/ beside the .env file).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
env_file="${HELICAL_ENV_FILE:-$root/.env}"
secrets="${HELICAL_SECRETS_DIR:-$(cd "$(dirname "$env_file")" && pwd)/secrets}"
umask 077
rand() { python3 -c "import secrets; print(secrets.token_urlsafe($1))"; }
fernet() { python3 -c "import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())"; }
old() { [ -f "$env_file" ] && sed -n "s/^$1=//p" "$env_file" | tail -1 || true; }

# --- settings ---------------------------------------------------------------------------------------------------
declare -A computed=(
  # root on the host: the containers still run as the image's airflow user (50000), never as root
  [AIRFLOW_UID]="$(u="$(id -u)"; [ "$u" = 0 ] && echo 50000 || echo "$u")"
  [HELICAL_HOST_DATA_DIR]="$root/data"
  [HELICAL_HOST_OUTPUT_DIR]="$root/outputs"
  [HELICAL_SECRETS_DIR]="$secrets"
)
if [ ! -f "$env_file" ]; then
  cp "$root/.env.example" "$env_file"
  for key in "${!computed[@]}"; do sed -i "s|^$key=.*|$key=${computed[$key]}|" "$env_file"; done
  echo "wrote $env_file (mode 0600)"
else
  # an older .env: add the settings it lacks (computed, else the example's default)
  while IFS= read -r line; do
    key="${line%%=*}"
    case "$line" in ''|'#'*) continue ;; esac
    grep -q "^$key=" "$env_file" || { echo "$key=${computed[$key]:-${line#*=}}" >> "$env_file"; echo "added $key to $env_file"; }
  done < "$root/.env.example"
fi
chmod 600 "$env_file"

# --- secrets ------------------------------------------------------------------------------------------------
mkdir -p "$secrets"
chmod 700 "$secrets"
new=()
put() {  # put NAME VALUE: write once; files are 0644 inside the 0700 folder so every container user can read
  [ -s "$secrets/$1" ] && return 0
  printf '%s' "$2" > "$secrets/$1"
  chmod 644 "$secrets/$1"
  new+=("$1")
}
value() { cat "$secrets/$1"; }
put postgres_password "$(old POSTGRES_PASSWORD | grep . || rand 18)"
put redis_password "$(old REDIS_PASSWORD | grep . || rand 18)"
put airflow_admin_password "$(old AIRFLOW_ADMIN_PASSWORD | grep . || rand 12)"
put airflow_fernet_key "$(old AIRFLOW_FERNET_KEY | grep . || fernet)"
put airflow_jwt_secret "$(old AIRFLOW_JWT_SECRET | grep . || rand 32)"
put airflow_api_secret_key "$(old AIRFLOW_API_SECRET_KEY | grep . || rand 32)"
put grafana_admin_password "$(old GRAFANA_ADMIN_PASSWORD | grep . || rand 12)"
# derived from the passwords: Airflow reads them through *_CMD settings (`cat /run/secrets/...`), Redis its config
put airflow_sql_alchemy_conn "postgresql+psycopg2://airflow:$(value postgres_password)@postgres:5432/airflow"
put airflow_celery_result_backend "db+postgresql://airflow:$(value postgres_password)@postgres:5432/airflow"
put airflow_celery_broker_url "redis://:$(value redis_password)@redis:6379/0"
put redis.conf "$(printf 'requirepass %s\nsave ""\n' "$(value redis_password)")"
# secrets an older .env held now live in secrets/: drop them from .env
sed -i -E '/^(POSTGRES_PASSWORD|REDIS_PASSWORD|AIRFLOW_ADMIN_PASSWORD|AIRFLOW_FERNET_KEY|AIRFLOW_JWT_SECRET|AIRFLOW_API_SECRET_KEY|GRAFANA_ADMIN_PASSWORD)=/d' "$env_file"

mkdir -p "$root/data/incoming" "$root/outputs"
if [ ${#new[@]} -gt 0 ]; then
  echo "wrote ${new[*]} to $secrets (folder 0700)"
  port="$(sed -n 's/^AIRFLOW_API_PORT=//p' "$env_file" | tail -1)"
  echo "  Airflow  http://localhost:${port:-8080}  user admin  password $(value airflow_admin_password)"
  echo "  Grafana  http://localhost:3000  user admin  password $(value grafana_admin_password)"
  echo "(later: cat $secrets/airflow_admin_password)"
else
  echo "$env_file and $secrets are complete; keeping them (delete a secret file to generate a new one)"
fi
