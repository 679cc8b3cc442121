"""Does a worker's memory depend on the shard size and not on the dataset size?

Writes two synthetic .h5ad files (default 10,000 and 200,000 cells, the fixture genes), plans both
with the same shard size, runs the real `helical-airflow embed-shard` on the middle shard of each in
a fresh subprocess, and prints each child's peak RSS (the kernel's ru_maxrss, read by a small launcher:
LAUNCHER) and the ratio large/small. Target: ratio <= 1.2. Exits 1 when the target is missed.

    .venv/bin/python bench/memory.py [--small 10000] [--large 200000] [--shard-size 1000]
                                     [--model geneformer] [--cache-dir DIR] [--repeats 1]

--sequence fasta|fasta.gz|csv|parquet measures a sequence model instead (default --model hyena_dna): synthetic
records of 500 random nucleotides (seeded) in that format; "cells" then counts records.

Without --cache-dir the offline fixture cache is built in the work folder first (tiny random
models: the numbers measure the I/O and runtime around the model, which is what grows with the
file if streaming is broken; a real model adds a constant for its weights to both sides).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synth import fixture_genes, write_synthetic_h5ad  # noqa: E402

TARGET_RATIO = 1.2


def cli() -> list[str]:
    """The installed console script next to this Python (the command launchers run)."""
    script = Path(sys.executable).with_name("helical-airflow")
    return [str(script)] if script.exists() else [sys.executable, "-m", "helical_airflow.cli"]


def run(args: list[str]) -> str:
    done = subprocess.run(cli() + args, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"helical-airflow {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


# The child runs under this small launcher (python -S, ~10 MB), which reports the child's ru_maxrss on stderr. Why not
# wait4 on the child directly: Linux counts the RSS a process had before exec in its ru_maxrss (the parent's, at
# fork), so every child read at least this bench's own RSS (measured: /bin/true read 333 MB from a 300 MB parent,
# 6 MB via the launcher; tests/unit/test_bench_scale.py). bench/scale.py and bench/finetune.py measure with it too.
LAUNCHER = """import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
sys.stderr.write(f"\\n{sys.argv[1]} {usage.ru_maxrss}\\n")
sys.exit(os.waitstatus_to_exitcode(status))
"""
PEAK_MARK = "bench-peak-rss-kib"


class Measured(NamedTuple):
    seconds: float
    peak_rss_mb: float  # the child's own peak RSS, from the kernel
    stdout: str
    stderr: str
    code: int


def measured_child(command: list[str], env: dict[str, str] | None = None) -> Measured:
    """Run `command` in a child process under LAUNCHER: its wall seconds, peak RSS, output and exit code."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        launcher = [sys.executable, "-S", "-c", LAUNCHER, PEAK_MARK]  # the launcher's sys.argv[1]; the child: [2:]
        code = subprocess.Popen([*launcher, *command], stdout=stdout, stderr=stderr, text=True, env=env).wait()
        seconds = time.perf_counter() - started
        stdout.seek(0)
        stderr.seek(0)
        out, errors = stdout.read(), stderr.read()
    marks = [line.split()[1] for line in errors.splitlines() if line.startswith(PEAK_MARK + " ")]
    if not marks:
        raise SystemExit(f"{' '.join(command[:4])} ... reported no peak RSS ({code}):\n{errors[-3000:]}")
    return Measured(seconds, int(marks[-1]) / 1024, out, errors, code)  # Linux reports ru_maxrss in KiB


def peak_rss_of(args: list[str], result_file: Path) -> tuple[float, float, dict[str, object]]:
    """(peak RSS MB from the kernel, wall seconds, the shard result JSON) of one embed-shard child."""
    child = measured_child(cli() + args)
    if child.code != 0:
        raise SystemExit(f"embed-shard {args} failed ({child.code}):\n{child.stderr[-3000:]}")
    result = json.loads(result_file.read_text())  # the shard's record (embed-shard prints logs only)
    return child.peak_rss_mb, child.seconds, result


def write_sequences(path: Path, n: int, seed: int, length: int = 500) -> Path:
    """n synthetic DNA records of `length` random nucleotides, in the format path's suffix names."""
    import gzip

    import numpy as np

    rng = np.random.default_rng(seed)
    letters = np.frombuffer(b"ACGT", dtype=np.uint8)
    text = letters[rng.integers(0, 4, size=n * length)].tobytes().decode()
    seqs = (text[i * length : (i + 1) * length] for i in range(n))
    name = path.name
    if name.endswith((".csv", ".parquet")):
        import pyarrow as pa
        import pyarrow.csv as pcsv
        import pyarrow.parquet as pq

        table = pa.table({"id": [f"s{i}" for i in range(n)], "sequence": list(seqs)})
        pq.write_table(table, path, row_group_size=1000) if name.endswith(".parquet") else pcsv.write_csv(table, path)
        return path
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "wt") as fh:
        for i, seq in enumerate(seqs):
            fh.write(f">s{i}\n{seq}\n")
    return path


def measure(work: Path, n_cells: int, args: argparse.Namespace, cache_dir: str) -> dict[str, object]:
    started = time.perf_counter()
    if args.sequence:
        path = write_sequences(work / f"synthetic_{n_cells}.{args.sequence}", n_cells, args.seed)
    else:
        path = write_synthetic_h5ad(work / f"synthetic_{n_cells}.h5ad", n_cells, fixture_genes(), seed=args.seed)
    write_seconds = time.perf_counter() - started
    plan_file = (
        run(
            [
                "plan",
                str(path),
                "--model",
                args.model,
                "--shard-size",
                str(args.shard_size),
                "--out",
                str(work / "outputs"),
                "--cache-dir",
                cache_dir,
                "--device",
                "cpu",
            ]
        )
        .strip()
        .splitlines()[-1]
    )
    plan = json.loads(Path(plan_file).read_text())
    shard = len(plan["shards"]) // 2
    peaks = []
    for _ in range(args.repeats):
        for stale in Path(plan["out_dir"], "shards").glob(f"{shard}.*"):
            stale.unlink()  # a finished shard would be reused, not re-embedded
        record = Path(plan["out_dir"], "shards", f"{shard}.json")
        peak, seconds, result = peak_rss_of(["embed-shard", "--plan", plan_file, "--shard", str(shard)], record)
        peaks.append(peak)
    return {
        "cells": n_cells,
        "file_mb": path.stat().st_size / 2**20,
        "write_s": write_seconds,
        "shard": shard,
        "shard_cells": result["cells"],
        "peak_rss_mb": max(peaks),
        "runner_peak_rss_mb": result["peak_rss_mb"],
        "embed_s": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=200_000)
    parser.add_argument("--shard-size", type=int, default=1000)
    parser.add_argument("--model", help="default: geneformer, or hyena_dna with --sequence")
    parser.add_argument("--sequence", choices=("fasta", "fasta.gz", "csv", "parquet"),
                        help="measure a sequence model on synthetic records in this format")
    parser.add_argument("--cache-dir", help="weights cache; default: build the offline fixture cache")
    parser.add_argument("--repeats", type=int, default=1, help="embed-shard runs per file (the max is kept)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, help="keep files here instead of a temporary folder")
    args = parser.parse_args()
    args.model = args.model or ("hyena_dna" if args.sequence else "geneformer")

    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        cache_dir = args.cache_dir
        if cache_dir is None:
            cache_dir = str(work / "fixture_cache")
            from helical_airflow.models import get_model

            run(["models", "fixture", "--out", cache_dir, "--model", get_model(args.model).helical_model_name])
        rows = [measure(work, n, args, cache_dir) for n in (args.small, args.large)]
        if args.workdir is None:
            shutil.rmtree(work / "outputs", ignore_errors=True)

    cpu = platform.processor() or platform.machine()
    print(
        f"machine: {cpu}, {psutil.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    )
    print(
        f"model {args.model}, shard size {args.shard_size}, cache {'fixture' if args.cache_dir is None else cache_dir}"
    )
    print(f"{'cells':>9} {'file MB':>8} {'shard':>6} {'peak RSS MB':>12} {'runner MB':>10} {'embed s':>8}")
    for row in rows:
        print(
            f"{row['cells']:>9} {row['file_mb']:>8.1f} {row['shard']:>6} {row['peak_rss_mb']:>12.1f} "
            f"{row['runner_peak_rss_mb']:>10.1f} {row['embed_s']:>8.1f}"
        )
    ratio = float(rows[1]["peak_rss_mb"]) / float(rows[0]["peak_rss_mb"])  # type: ignore[arg-type]
    growth = float(rows[1]["peak_rss_mb"]) - float(rows[0]["peak_rss_mb"])  # type: ignore[arg-type]
    print(f"peak RSS difference: {growth:+.1f} MB for {args.large - args.small} more cells in the file")
    verdict = "PASS" if ratio <= TARGET_RATIO else "FAIL"
    print(f"peak RSS ratio {args.large}/{args.small} cells: {ratio:.3f} (target <= {TARGET_RATIO}) {verdict}")
    sys.exit(0 if ratio <= TARGET_RATIO else 1)


if __name__ == "__main__":
    main()
