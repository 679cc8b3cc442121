#!/usr/bin/env bash
# The Kubernetes Secrets deploy/helm/values.yaml reads, with freshly generated values, for a release named
# `helical`. Idempotent: a Secret that exists is kept (delete it to regenerate). Values go to kubectl as files
# (--from-file), never as command-line arguments; the login password is printed once.
#
#   deploy/helm/create-secrets.sh [NAMESPACE]       # default helical-airflow
# Env: KUBECTL (default kubectl), HELICAL_LOGIN_USER (default admin), RELEASE (default helical).
set -euo pipefail
ns="${1:-helical-airflow}"
kubectl="${KUBECTL:-kubectl}"
release="${RELEASE:-helical}"
user="${HELICAL_LOGIN_USER:-admin}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
umask 077
rand() { python3 -c "import secrets; print(secrets.token_urlsafe($1), end='')"; }
exists() { "$kubectl" -n "$ns" get secret "$1" >/dev/null 2>&1; }
# secret NAME KEY=FILE...: create it from files unless it exists
secret() {
  local name="$1"; shift
  if exists "$name"; then echo "secret $name exists: kept"; return 0; fi
  local args=()
  for pair in "$@"; do args+=(--from-file="$pair"); done
  "$kubectl" -n "$ns" create secret generic "$name" "${args[@]}" >/dev/null
  echo "secret $name created"
}
"$kubectl" get namespace "$ns" >/dev/null 2>&1 || "$kubectl" create namespace "$ns" >/dev/null

# the database and broker passwords must agree across the Secrets that hold them: generate each once
rand 18 > "$tmp/pg"; rand 18 > "$tmp/pg-admin"; rand 18 > "$tmp/redis"
printf 'postgresql://airflow:%s@%s-postgresql:5432/airflow?sslmode=disable' "$(cat "$tmp/pg")" "$release" > "$tmp/metadata"
printf 'db+postgresql://airflow:%s@%s-postgresql:5432/airflow' "$(cat "$tmp/pg")" "$release" > "$tmp/result"
printf 'redis://:%s@%s-redis:6379/0' "$(cat "$tmp/redis")" "$release" > "$tmp/broker"
if exists helical-airflow-postgresql || exists helical-airflow-redis-password; then
  echo "the database or Redis Secret exists: keeping every connection Secret as it is"
else
  secret helical-airflow-postgresql password="$tmp/pg" postgres-password="$tmp/pg-admin"
  secret helical-airflow-metadata connection="$tmp/metadata"
  secret helical-airflow-result-backend connection="$tmp/result"
  secret helical-airflow-redis-password password="$tmp/redis"
  secret helical-airflow-broker-url connection="$tmp/broker"
fi
python3 -c "import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode(), end='')" > "$tmp/fernet"
rand 32 > "$tmp/jwt"; rand 32 > "$tmp/api"
secret helical-airflow-fernet-key fernet-key="$tmp/fernet"
secret helical-airflow-jwt-secret jwt-secret="$tmp/jwt"
secret helical-airflow-api-secret-key api-secret-key="$tmp/api"
printf '%s' "$user" > "$tmp/user"; rand 12 > "$tmp/login"
if exists helical-airflow-login; then
  echo "secret helical-airflow-login exists: kept (read it: kubectl -n $ns get secret helical-airflow-login" \
       "-o jsonpath='{.data.password}' | base64 -d)"
else
  secret helical-airflow-login username="$tmp/user" password="$tmp/login"
  echo "Airflow login: user $user  password $(cat "$tmp/login")   (shown once; it is in Secret helical-airflow-login)"
fi
