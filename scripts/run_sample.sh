#!/usr/bin/env bash
# The main job on the embedded default: embed data/sample.h5ad with Geneformer, offline.
# No weights can be assumed downloadable, so this builds the FIXTURE cache first (tiny random-weight models
# in helical's cache layout, every family that has one; a second run finds it current and writes nothing) and
# runs helical's real code against it; the outputs say they are a fixture run.
# Pass extra `helical-airflow run` options through, e.g. scripts/run_sample.sh --model uce (any family), or
# scripts/run_sample.sh --model hyena_dna (data/sample_dna.fa; --input PATH picks another input).
# What it prints: one line for the fixture cache, then the run's: the progress bar, one fixture warning and the
# summary table; the details go to log files (the fixture build's: outputs/logs/models-fixture.log; the run's:
# run.log in its run folder, named in the table).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ -f .helical-env ] || { echo "run ./setup_helical_env.sh first" >&2; exit 1; }
bin="$(cat .helical-env)"
cache="${HELICAL_AIRFLOW_CACHE_DIR:-$PWD/.fixture-cache}"
fixture_log=outputs/logs/models-fixture.log
mkdir -p "${fixture_log%/*}"
echo "fixture cache: $cache (building or checking it: the first time takes minutes; log: $fixture_log)" >&2
"$bin/helical-airflow" models fixture --out "$cache" >"$fixture_log" 2>&1 || {
  tail -n 20 "$fixture_log" >&2; echo "building the fixture cache failed: $fixture_log" >&2; exit 1; }
# The input: --input PATH (or SAMPLE=PATH); default data/sample.h5ad, or data/sample_dna.fa for a sequence model
# (scripts/run_sample.sh --model hyena_dna; RNA models read its DNA letters, T as U, as helical's tokenizers do).
# Every other argument goes to `helical-airflow run`.
input="${SAMPLE:-}" model=geneformer args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --input) input="$2"; shift 2 ;;
    --input=*) input="${1#--input=}"; shift ;;
    --model|-m) model="$2"; args+=("$1" "$2"); shift 2 ;;
    --model=*) model="${1#--model=}"; args+=("$1"); shift ;;
    *) args+=("$1"); shift ;;
  esac
done
if [ -z "$input" ]; then
  modality="$("$bin/python" -c 'import sys; from helical_airflow.models import get_model
print(get_model(sys.argv[1]).profile.modality)' "$model" 2>/dev/null || echo rna)"
  case "$modality" in
    dna_sequence|rna_sequence) input=data/sample_dna.fa ;;
    *) input=data/sample.h5ad ;;
  esac
fi
exec "$bin/helical-airflow" run "$input" --model geneformer --cache-dir "$cache" --shard-size 250 \
  --out outputs ${args[@]+"${args[@]}"}
