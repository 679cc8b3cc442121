"""Does fine-tuning's memory depend on the training-set size? And how many cells a second does it train?

Writes two synthetic labelled .h5ad files (default 2,000 and 8,000 cells, the fixture genes, bench/synth.py's five
cell types with a per-type gene block), runs the real `helical-airflow finetune` on each in a fresh subprocess
(one epoch, the same shard size, batch size and validation fraction), and prints each child's peak RSS (the
kernel's ru_maxrss, read by memory.LAUNCHER), its training cells/s (finetune.json: training cells over the
epoch's training seconds) and the memory ratio large/small. Target: ratio <= 1.2 (tokens live in memory-mapped
Arrow files on disk, one shard tokenised at a time: only an 8-byte-a-cell index mapping and the label column grow
with the set).
Exits 1 when the target is missed.

    .venv/bin/python bench/finetune.py [--small 2000] [--large 8000] [--model scgpt] [--shard-size 500]
                                       [--batch-size 16] [--device cpu|cuda] [--cache-dir DIR]

Without --cache-dir the offline fixture cache (tiny random models) is built in the work folder first: the numbers
measure the pipeline around the model (tokenising, Arrow I/O, the data loaders, the optimizer), which is what
would grow with the training set if the tokens were held in memory; a real model adds a constant to both sides.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory import cli, measured_child, run  # noqa: E402
from synth import fixture_genes, write_synthetic_h5ad  # noqa: E402

TARGET_RATIO = 1.2


def measure(work: Path, n_cells: int, args: argparse.Namespace, cache_dir: str) -> dict[str, object]:
    """One `helical-airflow finetune` child on `n_cells` synthetic cells: peak RSS, wall seconds, the epoch."""
    path = write_synthetic_h5ad(work / f"synthetic_{n_cells}.h5ad", n_cells, fixture_genes(), seed=args.seed,
                                draw="sparse")  # fmt: skip
    out = work / f"out_{n_cells}"
    command = cli() + [
        "finetune", str(path), "--label-key", "cell_type", "--model", args.model, "--epochs", "1",
        "--batch-size", str(args.batch_size), "--shard-size", str(args.shard_size), "--validation-fraction", "0.1",
        "--device", args.device, "--cache-dir", cache_dir, "--out", str(out), "--learning-rate", "1e-3",
    ]  # fmt: skip
    child = measured_child(command)
    if child.code != 0:
        raise SystemExit(f"finetune on {n_cells} cells failed:\n{child.stderr[-3000:]}")
    folder = Path(child.stdout.strip().splitlines()[-1])
    result = json.loads((folder / "finetune.json").read_text())
    epoch = result["history"][0]
    return {"cells": n_cells, "train_cells": result["split"]["train_cells"], "peak_rss_mb": child.peak_rss_mb,
            "cells_per_second": epoch["train_cells_per_second"], "epoch_s": epoch["seconds"], "wall_s": child.seconds,
            "device": result["device"], "precision": result.get("training_precision", "fp32")}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=2000)
    parser.add_argument("--large", type=int, default=8000)
    parser.add_argument("--model", default="scgpt", help="a cell model with fine-tuning (docs/finetune.md)")
    parser.add_argument("--shard-size", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", help="weights cache; default: build the offline fixture cache")
    parser.add_argument("--work", type=Path, help="keep the files here (default: a temporary folder)")
    args = parser.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-finetune-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        cache_dir = args.cache_dir
        if cache_dir is None:
            from helical_airflow.models import get_model

            cache_dir = str(work / "fixture_cache")
            run(["models", "fixture", "--out", cache_dir, "--model", get_model(args.model).helical_model_name])
        rows = [measure(work, n, args, cache_dir) for n in (args.small, args.large)]
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)

    print(f"{platform.machine()}, {psutil.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
          f"model {args.model}, device {rows[0]['device']} ({rows[0]['precision']}), shard size {args.shard_size}, "
          f"batch {args.batch_size}, cache {'fixture' if args.cache_dir is None else cache_dir}")  # fmt: skip
    print(f"{'cells':>7} {'train':>6} {'peak RSS MB':>12} {'train cells/s':>14} {'epoch s':>8} {'wall s':>7}")
    for row in rows:
        print(f"{row['cells']:>7} {row['train_cells']:>6} {row['peak_rss_mb']:>12.1f} "
              f"{row['cells_per_second']:>14.1f} {row['epoch_s']:>8.1f} {row['wall_s']:>7.1f}")  # fmt: skip
    ratio = float(rows[1]["peak_rss_mb"]) / float(rows[0]["peak_rss_mb"])  # type: ignore[arg-type]
    verdict = "PASS" if ratio <= TARGET_RATIO else "FAIL"
    print(f"peak RSS ratio {args.large}/{args.small} cells: {ratio:.3f} (target <= {TARGET_RATIO}) {verdict}")
    sys.exit(0 if ratio <= TARGET_RATIO else 1)


if __name__ == "__main__":
    main()
