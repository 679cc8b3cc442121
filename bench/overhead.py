"""How much does Airflow add? The DAG run on the local stack vs `helical-airflow run` on the same input.

Brings up the real local stack (Postgres, Redis, Airflow with the CeleryExecutor) in a work folder,
then, on the same input and parameters, times (1) `helical-airflow run` in one process (the baseline)
and (2) `helical_model_workflow` triggered through the REST API, from the POST to the run's success.
Each side runs --repeats times, in alternating order (a shared machine's load drifts); prints the
medians, their ratio, where the DAG's time went, the share of embed-task time spent outside embedding and
the model loads (one per task group, not one per shard). Target: ratio <= 1.3 for at least 20 shards on a run
whose baseline takes at least a minute. Exits 1 when the target is missed.

    .venv/bin/python bench/overhead.py [--cells 700] [--shard-size 35] [--model gf-6L-10M-i2048]
                                       [--cache-dir DIR] [--shape real] [--order cli-first|dag-first]
                                       [--repeats 2]

Without --cache-dir it builds a fixture cache with the model's true layer sizes (`--shape real`,
random weights: the compute is the real model's, the numbers carry no biology). The input is the
first --cells cells of data/sample.h5ad, so the baseline lasts long enough to be meaningful.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
DAG = "helical_model_workflow"
TARGET_RATIO = 1.3
MIN_BASELINE_S = 60.0
MIN_SHARDS = 20


def cli() -> list[str]:
    script = Path(sys.executable).with_name("helical-airflow")
    return [str(script)] if script.exists() else [sys.executable, "-m", "helical_airflow.cli"]


def free_ports(names: list[str]) -> dict[str, int]:
    socks = [socket.socket() for _ in names]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return {name: sock.getsockname()[1] for name, sock in zip(names, socks, strict=True)}
    finally:
        for sock in socks:
            sock.close()


def write_subset(source: Path, cells: int, out: Path) -> int:
    import anndata as ad

    adata = ad.read_h5ad(source)
    subset = adata[: min(cells, adata.n_obs)].copy()
    subset.write_h5ad(out)
    return int(subset.n_obs)


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())  # fmt: skip
    mem = psutil.virtual_memory().total / 2**30
    return f"{os.cpu_count()} vCPUs ({cpu}), {mem:.0f} GiB RAM, {platform.system()} {platform.release()}, " \
        f"Python {platform.python_version()}"  # fmt: skip


def run_baseline(args: argparse.Namespace, input_path: Path, cache: str, out: Path) -> float:
    cmd = [*cli(), "run", str(input_path), "--model", args.model, "--shard-size", str(args.shard_size),
           "--device", "cpu", "--cache-dir", cache, "--out", str(out)]  # fmt: skip
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"baseline failed:\n{done.stderr[-3000:]}")
    return wall


def run_dag(client, args: argparse.Namespace) -> tuple[float, str]:  # type: ignore[no-untyped-def]
    conf = {"input_path": "bench.h5ad", "model": args.model, "shard_size": args.shard_size, "device": "cpu"}
    t0 = time.perf_counter()
    run_id = client.trigger(DAG, conf)
    run = client.wait_for_run(DAG, run_id, timeout_s=7200, poll_s=0.5)
    wall = time.perf_counter() - t0
    if run["state"] != "success":
        sys.exit(f"the DAG run {run_id} ended {run['state']}; see the stack's logs")
    return wall, run_id


def breakdown(client, run_id: str) -> list[tuple[str, float]]:  # type: ignore[no-untyped-def]
    """Task durations, with the shards summed and their span (first start to last end)."""
    tis = [t for t in client.task_instances(DAG, run_id) if t["state"] == "success"]
    rows = []
    for t in sorted((t for t in tis if t["map_index"] < 0), key=lambda t: t["start_date"]):
        rows.append((t["task_id"], t["duration"]))
    shards = [t for t in tis if t["map_index"] >= 0]
    if shards:
        span = (datetime.fromisoformat(max(t["end_date"] for t in shards))
                - datetime.fromisoformat(min(t["start_date"] for t in shards))).total_seconds()  # fmt: skip
        rows.append((f"embed_shard x{len(shards)} tasks (span)", span))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=700)
    parser.add_argument("--shard-size", type=int, default=35)
    parser.add_argument("--model", default="gf-6L-10M-i2048")
    parser.add_argument("--cache-dir", help="weights cache; default: build a fixture of --shape in the work folder")
    parser.add_argument("--shape", default="real", choices=["real", "tiny"])
    parser.add_argument("--order", default="cli-first", choices=["cli-first", "dag-first"])
    parser.add_argument("--worker-concurrency", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="CLI/DAG pairs, in alternating order")
    args = parser.parse_args()

    from helical_airflow.stack import manager
    from helical_airflow.stack.client import AirflowClient
    from helical_airflow.stack.config import StackConfig

    work = Path(tempfile.mkdtemp(prefix="helical-overhead-"))
    work.chmod(0o755)  # Postgres runs as the postgres user when we are root
    data = work / "data"
    data.mkdir()
    n_cells = write_subset(REPO / "data" / "sample.h5ad", args.cells, data / "bench.h5ad")
    cache = args.cache_dir
    if cache is None:
        cache = str(work / "weights")
        t0 = time.perf_counter()
        subprocess.run([*cli(), "models", "fixture", "--out", cache, "--model", args.model, "--shape", args.shape],
                       check=True, capture_output=True)  # fmt: skip
        print(f"fixture cache ({args.shape} shape) built in {time.perf_counter() - t0:.0f}s (not timed below)")

    ports = free_ports(["postgres", "redis", "api", "scheduler_health", "worker_log", "trigger_log", "statsd"])
    cfg = StackConfig.from_env(state_dir=work / "state", data_dir=data, output_dir=data / "outputs", cache_dir=cache,
                               monitoring=False, python=sys.executable,
                               worker_concurrency=args.worker_concurrency)  # fmt: skip
    cfg.ports.update(ports)
    t0 = time.perf_counter()
    secrets, _ = manager.up(cfg, echo=lambda _: None)
    print(f"local stack up in {time.perf_counter() - t0:.0f}s (not timed below)")
    try:
        client = AirflowClient(cfg.api_url, "admin", secrets["admin_password"])
        client.wait_for_dag(DAG)
        time.sleep(5)  # let the fresh stack's start-up work (first parse, heartbeats) settle
        direct_out = work / "direct"
        cli_times: list[float] = []
        dag_times: list[float] = []
        for i in range(args.repeats):
            # alternate the order, so drifting load on a shared machine hits both sides alike
            cli_first = (args.order == "cli-first") == (i % 2 == 0)
            for side in ("cli", "dag") if cli_first else ("dag", "cli"):
                if side == "cli":
                    shutil.rmtree(direct_out, ignore_errors=True)
                    cli_times.append(run_baseline(args, data / "bench.h5ad", cache, direct_out))
                else:
                    shutil.rmtree(cfg.output_dir, ignore_errors=True)  # no shard to reuse: embed everything again
                    dag_s, run_id = run_dag(client, args)
                    dag_times.append(dag_s)
            print(f"  repeat {i + 1}: CLI {cli_times[-1]:.1f} s, DAG {dag_times[-1]:.1f} s "
                  f"({'CLI' if cli_first else 'DAG'} first)")  # fmt: skip
        rows = breakdown(client, run_id)
        embed_task_s = sum(t["duration"] for t in client.task_instances(DAG, run_id)
                           if t["map_index"] >= 0 and t["state"] == "success")  # fmt: skip
        same = compare_outputs(cfg.output_dir / "bench", direct_out / "bench")
        shard_stats = {"CLI": shard_seconds(direct_out / "bench"), "DAG": shard_seconds(cfg.output_dir / "bench")}
    finally:
        manager.down(cfg, echo=lambda _: None)
    n_shards = -(-n_cells // args.shard_size)
    cli_s, dag_s = statistics.median(cli_times), statistics.median(dag_times)
    ratio = dag_s / cli_s
    print(f"\nmachine: {machine()}")
    print(f"input: first {n_cells} cells of data/sample.h5ad; model {args.model} ({args.shape} fixture), "
          f"{n_shards} shard(s) of {args.shard_size}, CPU, worker concurrency {args.worker_concurrency}")  # fmt: skip
    print(f"outputs identical (DAG vs CLI): {same}")
    print("\nDAG tasks, last run (seconds):")
    for name, seconds in rows:
        print(f"  {name:<28} {seconds:8.1f}")
    print(f"  {'scheduling and hand-offs':<28} {dag_times[-1] - sum(s for _, s in rows):8.1f}")
    print("\nper shard, last run (model load s / embedding s, as the runner measured them):")
    for side, stats in shard_stats.items():
        print(f"  {side}: " + ", ".join(f"shard {i}: {load:.1f} / {emb:.1f}" for i, load, emb in stats))
    print(f"\n{'helical-airflow run (baseline)':<36} {cli_s:8.1f} s  (median of {len(cli_times)}: {_fmt(cli_times)})")
    print(
        f"{'helical_model_workflow on the stack':<36} {dag_s:8.1f} s  (median of {len(dag_times)}: {_fmt(dag_times)})"
    )
    dag_shards = shard_stats["DAG"]
    embedding_s = sum(emb for _, _, emb in dag_shards)
    loads = sum(1 for _, load, _ in dag_shards if load > 0)
    outside = 1 - embedding_s / embed_task_s if embed_task_s else float("nan")
    print(f"embed tasks: {embed_task_s:.1f} s in all, {embedding_s:.1f} s of it embedding -> "
          f"{100 * outside:.1f}% outside embedding (start-up, model load, reading, writing)")  # fmt: skip
    print(f"model loads in the DAG run: {loads} for {len(dag_shards)} shards (one per task group)")
    ok = ratio <= TARGET_RATIO and cli_s >= MIN_BASELINE_S and same and n_shards >= MIN_SHARDS
    note = "" if cli_s >= MIN_BASELINE_S else f" (baseline under {MIN_BASELINE_S:.0f} s: raise --cells)"
    print(f"ratio DAG / CLI (medians): {ratio:.3f} (target <= {TARGET_RATIO} for >= {MIN_SHARDS} shards){note} "
          f"-> {'PASS' if ok else 'FAIL'}")  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


def shard_seconds(root: Path) -> list[tuple[int, float, float]]:
    """(index, model load seconds, embedding seconds) of each shard of the run under `root`."""
    runs = [p for p in sorted(root.glob("*/manifest.json")) if not p.parent.is_symlink()]
    if not runs:
        return []
    shards = json.loads(runs[0].read_text())["shards"]
    return [(s["index"], s["model_load_seconds"], s["seconds"]) for s in shards]


def _fmt(values: list[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


def compare_outputs(dag_root: Path, cli_root: Path) -> bool:
    import anndata as ad

    def runs(root: Path) -> list[Path]:  # run folders, not the `latest` link
        return [p for p in sorted(root.glob("*/embeddings.h5ad")) if not p.parent.is_symlink()]

    dag_runs, cli_runs = runs(dag_root), runs(cli_root)
    if len(dag_runs) != 1 or len(cli_runs) != 1 or dag_runs[0].parent.name != cli_runs[0].parent.name:
        return False
    a, b = ad.read_h5ad(dag_runs[0]), ad.read_h5ad(cli_runs[0])
    key = next(iter(a.obsm))
    return bool(np.allclose(a.obsm[key], b.obsm[key], rtol=1e-5, atol=1e-6))


if __name__ == "__main__":
    sys.exit(main())
