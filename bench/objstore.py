"""Object storage input: a verified local copy (objstore.stage) against byte-range reads, on a real S3 server.

    python bench/objstore.py [--cells 50000] [--shard-size 1000]

Starts SeaweedFS (tests/stack_helpers.real_s3_server), uploads the 700-cell sample and a synthetic file
(bench/synth.py), and for each times, in the same run:
- copy: `objstore.stage` (one download, sha256 while it comes) then every shard's rows read from the copy;
- ranges: every shard read straight from the object (h5py over an fsspec file: HTTP range GETs of the CSR rows), each
  shard opening the object afresh as a shard task on another worker would;
- ranges + hash: the same plus one streamed pass for the content hash the run key needs (a byte-range design must
  still read the whole object once for it; validation also streams every count).
Prints the seconds and ratio (ranges / copy); docs/scale-out.md has the figures.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "bench")]


class _Tmp:
    """The one method stack_helpers.real_s3_server asks of pytest's tmp_path_factory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def mktemp(self, name: str) -> Path:
        path = Path(tempfile.mkdtemp(prefix=name, dir=self.root))
        return path


def read_rows(h5: Any, start: int, stop: int) -> int:
    """A shard's CSR rows and cell names (what h5io.read_shard reads), as raw arrays; returns the non-zeros read."""
    import numpy as np

    x = h5["X"]
    indptr = x["indptr"][start : stop + 1]
    lo, hi = int(indptr[0]), int(indptr[-1])
    data, indices = np.asarray(x["data"][lo:hi]), np.asarray(x["indices"][lo:hi])
    obs = h5["obs"]
    _ = obs[obs.attrs.get("_index", "_index")][start:stop]
    return len(data) + 0 * len(indices)


def read_rows_ranged(fs: Any, path: str, start: int, stop: int) -> int:
    """The rows from the object by byte ranges (h5py over an fsspec file: 1 MiB read-ahead blocks)."""
    import h5py

    with fs.open(path, "rb", block_size=1 << 20) as fh, h5py.File(fh, "r") as h5:
        return read_rows(h5, start, stop)


def read_rows_local(path: Path, start: int, stop: int) -> int:
    import h5py

    with h5py.File(path, "r") as h5:
        return read_rows(h5, start, stop)


def measure(server: Any, local: Path, key: str, shard_size: int, cache: Path) -> dict[str, float]:
    import anndata as ad

    from helical_airflow import objstore

    fs = server.filesystem()
    fs.put_file(str(local), f"{server.bucket}/{key}")
    n = ad.read_h5ad(local, backed="r").n_obs
    ranges = [(s, min(s + shard_size, n)) for s in range(0, n, shard_size)]
    os.environ.update({**server.env(), "HELICAL_AIRFLOW_OBJECT_CACHE_DIR": str(cache)})  # the standard variables
    from helical_airflow import settings

    settings.reload()
    objstore._filesystem.cache_clear()
    objstore.filesystem(objstore.parse(f"s3://{server.bucket}/{key}")).info(f"{server.bucket}/{key}")  # warm: both
    started = time.perf_counter()  # arms start with a connected client
    copy = objstore.stage(objstore.parse(f"s3://{server.bucket}/{key}"))
    for start, stop in ranges:
        read_rows_local(copy, start, stop)
    t_copy = time.perf_counter() - started

    started = time.perf_counter()
    for start, stop in ranges:
        read_rows_ranged(fs, f"{server.bucket}/{key}", start, stop)
    t_ranges = time.perf_counter() - started
    started = time.perf_counter()
    digest = hashlib.sha256()
    with fs.open(f"{server.bucket}/{key}", "rb", block_size=8 << 20) as fh:
        while block := fh.read(8 << 20):
            digest.update(block)
    t_hash = time.perf_counter() - started
    return {"cells": n, "mb": local.stat().st_size / 2**20, "shards": len(ranges), "copy": t_copy,
            "ranges": t_ranges, "ranges_hash": t_ranges + t_hash}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=50_000, help="cells of the synthetic file")
    parser.add_argument("--shard-size", type=int, default=1000)
    args = parser.parse_args()
    from stack_helpers import real_s3_server
    from synth import fixture_genes, write_synthetic_h5ad

    with tempfile.TemporaryDirectory(prefix="bench-objstore-") as tmp:
        root = Path(tmp)
        synthetic = root / f"synthetic{args.cells}.h5ad"
        write_synthetic_h5ad(synthetic, args.cells, fixture_genes(), genes_per_cell=100, seed=0)
        started = time.perf_counter()
        with real_s3_server(_Tmp(root)) as server:  # type: ignore[arg-type]
            print(f"SeaweedFS up in {time.perf_counter() - started:.1f}s")
            rows = [
                ("sample", measure(server, REPO / "data" / "sample.h5ad", "sample.h5ad", 350, root / "c1")),
                ("synthetic", measure(server, synthetic, synthetic.name, args.shard_size, root / "c2")),
            ]
    print(f"{'file':<10} {'cells':>8} {'MB':>7} {'shards':>6} {'copy s':>8} {'ranges s':>9} {'ranges+hash s':>14} "
          f"{'ranges/copy':>11} {'(ranges+hash)/copy':>18}")  # fmt: skip
    for name, r in rows:
        print(f"{name:<10} {r['cells']:>8} {r['mb']:>7.1f} {r['shards']:>6} {r['copy']:>8.2f} {r['ranges']:>9.2f} "
              f"{r['ranges_hash']:>14.2f} {r['ranges'] / r['copy']:>11.2f} "
              f"{r['ranges_hash'] / r['copy']:>18.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
