#!/usr/bin/env bash
# Install the MLflow tracking server (`mlflow server`) into ./.venv-mlflow, the same version as the project's
# MLflow client (mlflow-skinny, extra `tracking`), only when it is missing or another version.
# `helical-airflow stack up` and the tracking tests start `.venv-mlflow/bin/mlflow server` (HELICAL_AIRFLOW_MLFLOW_SERVER
# overrides the path). PYTHON: the project env's interpreter (scripts/test.sh passes it).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$(cat "$root/.helical-env" 2>/dev/null)/python}"
venv="$root/.venv-mlflow"
want="$("$PYTHON" -c 'from importlib.metadata import version; print(version("mlflow-skinny"))')"
have="$("$venv/bin/python" -c 'from importlib.metadata import version; print(version("mlflow"))' 2>/dev/null || true)"
if [ "$have" = "$want" ] && [ -x "$venv/bin/mlflow" ]; then
  exit 0
fi
echo "[test deps] installing the MLflow server $want into $venv"
[ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
"$venv/bin/python" -m pip install -q "mlflow==$want"
