#!/usr/bin/env bash
# Every model family on a GPU: each family's adapter, through helical's real code on the offline fixture, embeds the
# sample on CUDA and on the CPU; prints cells/s on each and the largest per-cell difference (fp32), and for the
# families whose helical code needs CUDA-only kernels (cpu_unsupported) the CUDA run alone.
#
# 1. Here (with internet to PyPI), once:   bench/gpu_check.sh prepare     (the same carried wheels)
# 2. On the GPU machine:
#       run(command="bash bench/gpu_families.sh", carry=[".gpu-carry"], timeout_s=480)
#    results under $OUT/families.json; the numbers go into docs/models.md.
# Test it on a CPU: GPU_CHECK_DEVICE=cpu bash bench/gpu_families.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
OUT=${OUT:-$(mktemp -d)}
SITE=${GPU_CHECK_SITE:-/tmp/gpu-check-site}
mkdir -p "$OUT"
if ls .gpu-carry/wheels/*.whl >/dev/null 2>&1; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
    .gpu-carry/wheels/*.whl
  export PYTHONPATH="$SITE:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
[[ "$DEVICE" == "cuda" ]] && { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true; }
CACHE=/tmp/gpu-families-fixture
"$PYTHON" -c "from pathlib import Path; from helical_airflow.models.fixture import build_fixture; build_fixture(Path('$CACHE'))"

# one child per family and device: helical reads its cache prefix once per process
"$PYTHON" - "$CACHE" "$DEVICE" "$OUT" <<'EOF'
import json, os, subprocess, sys, time
cache, device, out = sys.argv[1:4]
from helical_airflow.models import FAMILIES
from helical_airflow.models.fixture import FIXTURE_FAMILIES
CHILD = r"""
import json, sys, time
import anndata as ad, numpy as np
from helical_airflow.models import get_model, registry
name, device, out = sys.argv[1:4]
spec = get_model(name)
adata = ad.read_h5ad("data/sample.h5ad")
runner = registry.load_runner(spec, device=device, precision="fp32", batch_size=spec.profile.batch_size,
                              engine=spec.profile.engine, seed=0, options=registry.resolve_options(spec, {}))
runner.embed(adata[:32].copy())  # warm-up
t0 = time.perf_counter(); emb = runner.embed(adata); seconds = time.perf_counter() - t0
np.save(out, emb)
print(json.dumps({"cells_per_s": adata.n_obs / seconds, "dim": int(emb.shape[1]), "finite": bool(np.isfinite(emb).all())}))
"""
results = {}
for family in FIXTURE_FAMILIES:
    row = {}
    devices = [device] if FAMILIES[family].cpu_unsupported or device == "cpu" else [device, "cpu"]
    for dev in devices:
        env = {**os.environ, "CACHE_DIR_HELICAL_PREFIX": cache}
        done = subprocess.run([sys.executable, "-c", CHILD, family, dev, f"{out}/{family}-{dev}.npy"],
                              capture_output=True, text=True, env=env, timeout=600)
        row[dev] = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else {"error": done.stderr[-800:]}
    if len(devices) == 2 and all("error" not in row[d] for d in devices):
        import numpy as np
        a, b = (np.load(f"{out}/{family}-{d}.npy") for d in devices)
        row["max_abs_diff_vs_cpu"] = float(np.nanmax(np.abs(a - b)))
    results[family] = row
    print(family, json.dumps(row))
json.dump(results, open(f"{out}/families.json", "w"), indent=1)
EOF
