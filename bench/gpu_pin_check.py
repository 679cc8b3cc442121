"""One shard group per GPU, on a real GPU machine (issue 20 item 3; run by bench/gpu_check.sh).

Starts as many stand-in shard groups at once as the machine has GPUs (gpus.devices(): nvidia-smi -L). Each leases
a GPU through gpus.lease() and runs its child with CUDA_VISIBLE_DEVICES set to it, exactly as the local launcher
does; the child reports the devices it sees (torch.cuda.device_count(), the UUID of its device 0) and times a fixed
fp16 matmul loop. Passes when every child sees exactly one GPU and no two children share one. The ratio printed is
the slowest child's matmul seconds with all groups at once over one group alone, measured first in the same run:
about 1.0 when each group has a GPU of its own, about N when all N groups landed on one GPU. On a one-GPU machine
it runs one group (harmless; it only shows that the pinned child sees its GPU).

CPU dry run (no CUDA: the child reports CUDA_VISIBLE_DEVICES instead of a UUID):
    HELICAL_AIRFLOW_GPUS=4 PYTHONPATH=src python bench/gpu_pin_check.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from helical_airflow import gpus  # noqa: E402

CHILD = """
import json, os, time
import torch
if not torch.cuda.is_available():
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    print(json.dumps({"visible": len(visible.split(",")), "uuid": "cpu-dry-run:" + visible, "seconds": 0.0}))
    raise SystemExit
props = torch.cuda.get_device_properties(0)
x = torch.randn(8192, 8192, device="cuda", dtype=torch.float16)
(x @ x).sum().item()  # warm-up: kernels chosen, memory allocated
torch.cuda.synchronize()
started = time.perf_counter()
for _ in range(300):
    y = x @ x
torch.cuda.synchronize()
print(json.dumps({"visible": torch.cuda.device_count(), "uuid": str(props.uuid), "name": props.name,
                  "seconds": time.perf_counter() - started}))
"""


def group(lock_dir: Path, results: list[dict]) -> None:
    with gpus.lease(lock_dir=lock_dir, wait_s=120) as device:
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(device)}
        done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise SystemExit(f"child on GPU {device} failed: {done.stderr[-2000:]}")
        results.append({"leased": device, **json.loads(done.stdout.strip().splitlines()[-1])})


def main() -> int:
    ids = gpus.devices()
    print(f"GPUs (HELICAL_AIRFLOW_GPUS={os.environ.get('HELICAL_AIRFLOW_GPUS', 'auto')}): {list(ids)}")
    if not ids:
        print("no GPU: nothing to pin")
        return 0
    lock_dir = Path(tempfile.mkdtemp(prefix="gpu-pin-check-"))
    alone: list[dict] = []
    group(lock_dir, alone)
    together: list[dict] = []
    threads = [threading.Thread(target=group, args=(lock_dir, together)) for _ in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for r in together:
        print(f"group on leased GPU {r['leased']}: sees {r['visible']} device(s), uuid {r['uuid']}, "
              f"matmul {r['seconds']:.3f}s")  # fmt: skip
    uuids = [r["uuid"] for r in together]
    ok = len(together) == len(ids) and all(r["visible"] == 1 for r in together) and len(set(uuids)) == len(uuids)
    if alone[0]["seconds"] > 0:
        ratio = max(r["seconds"] for r in together) / alone[0]["seconds"]
        print(f"RESULT pinning: {len(ids)} group(s) at once, slowest {ratio:.2f}x one group alone "
              f"({alone[0]['seconds']:.3f}s); ~1.0 = one GPU each, ~{len(ids)} = all on one")  # fmt: skip
    print(f"RESULT pinning {'PASS' if ok else 'FAIL'}: {len(set(uuids))} distinct GPU(s) for {len(together)} group(s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
