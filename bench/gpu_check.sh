#!/usr/bin/env bash
# The GPU throughput check: helical's Geneformer get_embeddings vs the fast path on one GPU.
#
# 1. Here (with internet to PyPI), once:   bench/gpu_check.sh prepare
#    downloads helical and the packages it imports that the GPU machine lacks (pure-Python or
#    manylinux x86-64 wheels for Python 3.12, ~9 MB) into .gpu-carry/ (git-ignored locally).
# 2. On the GPU machine (no internet; python3 with torch and transformers, no helical):
#       run(command="bash bench/gpu_check.sh", carry=[".gpu-carry"], timeout_s=420)
#    prints the GPU pinning check (bench/gpu_pin_check.py), each path's cells/s, the ratio to helical,
#    the achieved TFLOP/s and the card's name,
#    and writes the JSON results under $OUT. Finishes in under 6 minutes on an H100.
# Test it on a CPU with a tiny dataset:
#   GPU_CHECK_DEVICE=cpu GPU_CHECK_CELLS=8 GPU_CHECK_ARGS="--mean-genes 300" bash bench/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CARRY=.gpu-carry
PYTHON=${PYTHON:-python3}

# helical 3.1.4 and what its Geneformer import chain needs beyond the GPU image's packages
# (anndata, scanpy, datasets, requests-cache, ...) plus pydantic for helical_airflow; versions as
# in setup_helical_env.sh's environment, where the same code is tested.
WHEELS=(
  helical==3.1.4 anndata==0.12.19 scanpy==1.12 datasets==3.6.0 dill==0.3.8 multiprocess==0.70.16
  requests-cache==1.3.3 cattrs==26.2.1 url-normalize==3.1.0 platformdirs==4.14.8 natsort==8.4.0
  legacy-api-wrap==1.5 zarr==3.4.2 numcodecs==0.17.1 donfig==0.8.1.post1 fast-array-utils==1.5.1
  scverse-misc==0.1.7 msgspec==0.22.0 google-crc32c==1.9.0
  pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
)

if [[ "${1:-run}" == "prepare" ]]; then
  grep -qx "/$CARRY/" .git/info/exclude 2>/dev/null || echo "/$CARRY/" >> .git/info/exclude
  mkdir -p "$CARRY/wheels"
  "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any \
    -d "$CARRY/wheels" "${WHEELS[@]}"
  du -sh "$CARRY"
  exit 0
fi

DEVICE=${GPU_CHECK_DEVICE:-cuda}
CELLS=${GPU_CHECK_CELLS:-3072}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
SITE=${GPU_CHECK_SITE:-/tmp/gpu-check-site}
start=$SECONDS

ls "$CARRY"/wheels/*.whl >/dev/null 2>&1 || { echo "no wheels in $CARRY/wheels: run 'bench/gpu_check.sh prepare' first and carry $CARRY"; exit 2; }
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$CARRY"/wheels/*.whl
export PYTHONPATH="$SITE:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 TOKENIZERS_PARALLELISM=false
echo "== environment ($((SECONDS - start)) s)"
if [[ "$DEVICE" == "cuda" ]]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader || true
fi
"$PYTHON" -c "import torch, transformers, helical, anndata, datasets; print('torch', torch.__version__, '| transformers', transformers.__version__, '| helical', __import__('importlib.metadata').metadata.version('helical'), '| cuda', torch.cuda.is_available())"

run_bench() {  # name, timeout, args...
  local name=$1 limit=$2; shift 2
  echo "== $name ($((SECONDS - start)) s)"
  timeout "$limit" "$PYTHON" bench/throughput.py --device "$DEVICE" --cells "$CELLS" \
    --cache-dir /tmp/gpu-check-fixture --json "$OUT/$name.json" "$@" ${GPU_CHECK_ARGS:-} 2>&1 \
    | grep -v -e "Loading weights" -e "Writing model shards" -e "it/s]" | tee "$OUT/$name.log" || echo "$name failed or timed out"
}

# one shard group per GPU (issue 20): N concurrent leases pin N children to N distinct GPUs (one on a 1-GPU box)
echo "== GPU pinning ($((SECONDS - start)) s)"
timeout 120 "$PYTHON" bench/gpu_pin_check.py 2>&1 | tee "$OUT/gpu_pin.log" || echo "GPU pinning check failed or timed out"

# the issue's target shape: helical (fp16 autocast, batch 24) vs the fast path, two kernels, two budgets
run_bench gf-12L-104M-i4096 240 --model gf-12L-104M-i4096 --kernels padded,packed --token-budget 65536,131072,262144
# the small shape, where host-side work (tokenisation, batching) shows first
run_bench gf-6L-10M-i2048 100 --model gf-6L-10M-i2048 --kernels padded,packed

echo "== summary ($((SECONDS - start)) s)"
grep -h -A8 "^gf-" "$OUT"/*.log | grep -v RESULT || true
grep -h "RESULT pinning" "$OUT/gpu_pin.log" || true
