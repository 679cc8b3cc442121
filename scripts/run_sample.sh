#!/usr/bin/env bash
# The main job on the embedded default: embed data/sample.h5ad with Geneformer, offline.
# No weights can be assumed downloadable, so this builds the FIXTURE cache first (tiny random-weight models
# in helical's cache layout, every family that has one; a second run finds it current and writes nothing) and
# runs helical's real code against it; the outputs say they are a fixture run.
# Pass extra `helical-airflow run` options through, e.g. scripts/run_sample.sh --model uce (any family).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ -f .helical-env ] || { echo "run ./setup_helical_env.sh first" >&2; exit 1; }
bin="$(cat .helical-env)"
cache="${HELICAL_AIRFLOW_CACHE_DIR:-$PWD/.fixture-cache}"
"$bin/helical-airflow" models fixture --out "$cache" >/dev/null
exec "$bin/helical-airflow" run data/sample.h5ad --model geneformer --cache-dir "$cache" --shard-size 250 \
  --out outputs "$@"
