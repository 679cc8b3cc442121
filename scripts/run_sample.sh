#!/usr/bin/env bash
# The main job on the embedded default: embed data/sample.h5ad with Geneformer, offline.
# No weights can be assumed downloadable, so this builds the FIXTURE cache first (tiny random-weight models
# in helical's cache layout, every family that has one; a second run finds it current and writes nothing) and
# runs helical's real code against it; the outputs say they are a fixture run.
# Pass extra `helical-airflow run` options through, e.g. scripts/run_sample.sh --model uce (any family), or
# scripts/run_sample.sh --model hyena_dna (data/sample_dna.fa; --input PATH picks another input).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ -f .helical-env ] || { echo "run ./setup_helical_env.sh first" >&2; exit 1; }
bin="$(cat .helical-env)"
cache="${HELICAL_AIRFLOW_CACHE_DIR:-$PWD/.fixture-cache}"
"$bin/helical-airflow" models fixture --out "$cache" >/dev/null
# The input: --input PATH (or SAMPLE=PATH); default data/sample.h5ad, or data/sample_dna.fa for a sequence model
# (scripts/run_sample.sh --model hyena_dna). Every other argument goes to `helical-airflow run`.
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
    dna_sequence) input=data/sample_dna.fa ;;
    # no RNA sample is shipped: the DNA sample transcribed (T -> U; headers kept). Not in outputs/ itself: the run
    # folder is outputs/<file name>/<run key>, which a file outputs/sample_rna.fa would block
    rna_sequence) mkdir -p outputs/inputs; input=outputs/inputs/sample_rna.fa
      sed '/^>/!y/Tt/Uu/' data/sample_dna.fa > "$input" ;;
    *) input=data/sample.h5ad ;;
  esac
fi
exec "$bin/helical-airflow" run "$input" --model geneformer --cache-dir "$cache" --shard-size 250 \
  --out outputs ${args[@]+"${args[@]}"}
