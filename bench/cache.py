"""First run vs an identical second run of `helical-airflow run`: finished shards are reused.

Runs the real CLI three times on the same input, in fresh processes, and times each:
1. first run into an empty output folder (embeds every shard),
2. the identical command again (same run key: every shard and the merged outputs are reused),
3. negative control: the same command with another --seed (a new run key), which must embed every
   shard again; if this one were fast too, the bench would not be measuring reuse.
Prints run 2 / run 1 (target <= 5%) and checks that run 2 rewrote no shard file. The default
weights are the fixture of the real architecture (random weights, true layer sizes), so the first
run costs what a real model costs; with the tiny test fixture a run is mostly process start-up.

    .venv/bin/python bench/cache.py                       # data/sample.h5ad, geneformer, real-size fixture
    .venv/bin/python bench/cache.py --input BIG.h5ad --shard-size 1000 --cache-dir DIR
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
TARGET = 0.05


def cli() -> list[str]:
    beside = Path(sys.executable).with_name("helical-airflow")
    found = shutil.which("helical-airflow")
    return [str(beside)] if beside.is_file() else [found] if found else [sys.executable, "-m", "helical_airflow.cli"]


def timed_run(args: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"helical-airflow failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return seconds


def shard_files(out: Path) -> dict[str, int]:
    """Every shard output under `out`, with its modification time in ns (a rewrite changes it)."""
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in sorted(out.rglob("shards/*")) if p.is_file()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", default=str(REPO / "data" / "sample.h5ad"))
    p.add_argument("--model", default="geneformer")
    p.add_argument("--shard-size", type=int, default=100)
    p.add_argument("--engine", choices=["helical", "fast"], default=None)
    p.add_argument("--cache-dir", default=None, help="weights cache (default: build the offline fixture in a temp dir)")
    p.add_argument("--fixture-shape", choices=["real", "tiny"], default="real",
                   help="fixture built when no --cache-dir: real layer sizes (a model's true cost) or tiny")
    p.add_argument("--no-control", action="store_true", help="skip the negative-control run")
    p.add_argument("--json", default=None, help="also write the results to this file")
    args = p.parse_args()
    from helical_airflow.models import get_model  # the model table only: imports neither helical nor torch

    work = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    cache_dir = args.cache_dir
    if cache_dir is None:  # the CLI's own fixture builder, in its own process like everything here
        cache_dir = str(work / "fixture")
        family = get_model(args.model).family
        subprocess.run([*cli(), "models", "fixture", "--out", cache_dir, "--family", family,
                         "--shape", args.fixture_shape], check=True, capture_output=True)
    out = work / "outputs"
    base = [*cli(), "run", args.input, "--model", args.model, "--cache-dir", cache_dir, "--out", str(out),
            "--shard-size", str(args.shard_size), "--device", "cpu"]
    if args.engine:
        base += ["--engine", args.engine]
    env_note = f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}"

    first = timed_run(base)
    shards_after_first = shard_files(out)
    second = timed_run(base)
    rewritten = [k for k, v in shard_files(out).items() if shards_after_first.get(k) != v]
    control = None if args.no_control else timed_run([*base, "--seed", "1"])

    ratio = second / first
    result = {
        "input": args.input, "model": args.model, "shard_size": args.shard_size, "cache_dir": cache_dir,
        "first_s": first, "second_s": second, "ratio": ratio, "target": TARGET, "passed": ratio <= TARGET,
        "shard_files": len(shards_after_first), "rewritten_by_second_run": rewritten,
        "control_other_seed_s": control, "control_ratio": None if control is None else control / first,
        "machine": env_note,
    }
    print(f"helical-airflow run {Path(args.input).name} --model {args.model} --shard-size {args.shard_size}"
          f" ({env_note})")
    print(f"first run   {first:8.1f} s  ({len(shards_after_first)} shard files written)")
    print(f"second run  {second:8.1f} s  (identical command; shard files rewritten: {len(rewritten)})")
    if control is not None:
        print(f"control     {control:8.1f} s  (--seed 1: new run key, every shard embedded again; "
              f"ratio {control / first:.2f})")
    verdict = "PASS" if ratio <= TARGET and not rewritten else "FAIL"
    print(f"second / first = {ratio:.3f} (target <= {TARGET}): {verdict}")
    print("RESULT " + json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
