"""The run folder on disk: atomic writes (atomic.py, re-exported here: a killed process never leaves a
half-written file), shard state, and the merged outputs (embeddings.h5ad, manifest.json, and the modality's
extras).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from . import modality
from .atomic import _atomic, current_umask, save_npy, write_json, write_text, write_with  # noqa: F401 - re-exported
from .errors import ShardError
from .spec import Manifest, Plan, ShardResult
from .versions import package_versions

log = logging.getLogger(__name__)

# ---- the run folder: shard state and the merged outputs -------------------------------------------------


def finished_result(plan: Plan, index: int) -> ShardResult | None:
    """A shard counts as done when its array and its result record are both on disk and agree."""
    npy, record = plan.shard_file(index), plan.shard_result_file(index)
    if not (npy.is_file() and record.is_file()):
        return None
    try:
        result = ShardResult.model_validate_json(record.read_text())
        rows = np.load(npy, mmap_mode="r").shape[0]
    except (ValueError, OSError):
        return None  # a damaged record is redone, never trusted
    return result if rows == result.cells else None


def batch_size_file(plan: Plan) -> Path:
    return plan.out_path / "batch_size.json"


def batch_size(plan: Plan) -> int:
    """The batch size the run's embed processes use: the plan's, or the smaller one that a memory-cap stop (E305)
    left in batch_size.json for the retry. Batching does not change a row's embedding (each family's shard_atol),
    so the run key and the finished shards stay valid; each ShardResult records the batch it ran with."""
    try:
        return max(1, int(json.loads(batch_size_file(plan).read_text())["batch_size"]))
    except (OSError, ValueError, KeyError, TypeError):
        return plan.params.batch_size


def halve_batch_size(plan: Plan, reason: str) -> tuple[int, int]:
    """Record half the current batch size (at least 1) for the next attempt; returns (old, new)."""
    old = batch_size(plan)
    new = max(1, old // 2)
    write_json(batch_size_file(plan), {"batch_size": new, "was": old, "reason": reason,
                                       "at": datetime.now(UTC).isoformat(timespec="seconds")})  # fmt: skip
    return old, new


def shard_results(plan: Plan) -> list[ShardResult]:
    results = [finished_result(plan, shard.index) for shard in plan.shards]
    missing = [shard.index for shard, result in zip(plan.shards, results, strict=True) if result is None]
    if missing:
        raise ShardError(
            "E304",
            f"{len(missing)} of {len(plan.shards)} shards are not finished (first: {missing[:10]})",
            "embed them (helical-airflow embed-shard --plan ... --shard I) or re-run `helical-airflow run`, "
            "which resumes",
        )
    return [result for result in results if result is not None]


def embeddings_key(plan: Plan) -> str:
    return f"X_{plan.model_family}"


def load_embeddings(plan: Plan) -> np.ndarray:
    shard_results(plan)
    return np.concatenate([np.load(plan.shard_file(shard.index)) for shard in plan.shards], axis=0)


# Rows read at once when the run's embeddings are streamed (merge, the gate's statistics): 4M values, 16 MB of
# float32, whatever the cell count. Measured with bench/scale.py (docs/benchmarks.md): merge holding the whole
# matrix grew with the cells; in blocks its peak stays that of the obs table and the process.
BLOCK_VALUES = 1 << 22


class ShardedEmbeddings:
    """The run's embeddings as one (rows x dim) matrix that stays on disk: the finished shards' .npy files read
    with plain file reads (not memory maps: mapped pages count in a process's RSS until it unmaps them).

    `x[rows]` (an integer array) gathers those rows; `blocks()` streams every row in order, at most `block_rows`
    at a time (never across a shard's end); `np.asarray(x)` loads it whole, as load_embeddings does."""

    def __init__(self, plan: Plan) -> None:
        shard_results(plan)  # E304 when a shard is missing, as load_embeddings
        self.files = [plan.shard_file(shard.index) for shard in plan.shards]
        headers = [_npy_header(f) for f in self.files]
        dims = {shape[1:] for shape, _, _ in headers}
        dtypes = {dtype for _, dtype, _ in headers}
        if len(dims) != 1 or len(dtypes) != 1 or any(len(shape) != 2 for shape, _, _ in headers):
            raise ShardError("E304", f"the shards disagree on shape or dtype ({dims}, {dtypes})",
                             "delete the run folder's shards/ and embed them again")  # fmt: skip
        self._offsets = [offset for _, _, offset in headers]
        self._stops = np.cumsum([shape[0] for shape, _, _ in headers]).astype(np.int64)
        self.dtype = np.dtype(dtypes.pop())
        self.shape = (int(self._stops[-1]) if len(self._stops) else 0, int(dims.pop()[0]) if dims else 0)
        self.ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = np.concatenate([np.load(f) for f in self.files], axis=0)
        return whole if dtype is None else whole.astype(dtype)

    def _read(self, shard: int, lo: int, hi: int) -> np.ndarray:
        """Rows [lo, hi) of one shard (0-based within the shard)."""
        row_bytes = self.shape[1] * self.dtype.itemsize
        with open(self.files[shard], "rb") as fh:
            fh.seek(self._offsets[shard] + lo * row_bytes)
            return np.fromfile(fh, dtype=self.dtype, count=(hi - lo) * self.shape[1]).reshape(hi - lo, self.shape[1])

    def blocks(self, block_rows: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, rows) in order, each block at most `block_rows` rows (default: BLOCK_VALUES values)."""
        step = max(1, block_rows or BLOCK_VALUES // max(1, self.shape[1]))
        start = 0
        for shard, stop in enumerate(self._stops.tolist()):
            for lo in range(0, stop - start, step):
                hi = min(lo + step, stop - start)
                yield start + lo, self._read(shard, lo, hi)
            start = stop

    def __getitem__(self, rows: Any) -> np.ndarray:
        """The rows at the integer positions `rows`, in that order (a copy, not a view)."""
        given = np.asarray(rows, dtype=np.int64).reshape(-1)
        if given.size and (given.min() < -len(self) or given.max() >= len(self)):
            raise IndexError(f"row out of range for {len(self)} rows")
        wanted = np.where(given < 0, given + len(self), given)
        out = np.empty((wanted.size, self.shape[1]), dtype=self.dtype)
        order = np.argsort(wanted, kind="stable")
        shard_of = np.searchsorted(self._stops, wanted[order], side="right")
        starts = np.concatenate([[0], self._stops[:-1]])
        for shard in np.unique(shard_of).tolist():
            hit = order[shard_of == shard]
            local = wanted[hit] - starts[shard]
            lo, hi = int(local.min()), int(local.max()) + 1
            if (hi - lo) * self.shape[1] <= BLOCK_VALUES:  # close together: one read
                out[hit] = self._read(shard, lo, hi)[local - lo]
            else:
                for position, row in zip(hit.tolist(), local.tolist(), strict=True):
                    out[position] = self._read(shard, row, row + 1)[0]
        return out


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) of a C-ordered .npy file, from its header alone."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(fh)
        if fortran:
            raise ShardError("E304", f"{path} is Fortran-ordered", "embed the shard again (np.save writes C order)")
        return shape, dtype, fh.tell()


def manifest_file(plan: Plan) -> Path:
    return plan.out_path / "manifest.json"


def load_manifest(plan: Plan) -> Manifest:
    return Manifest.model_validate_json(manifest_file(plan).read_text())


def merge(plan: Plan) -> Manifest:
    """Stack the shards in row order into embeddings.h5ad (the rows' metadata as obs + obsm), the modality's extra
    outputs (records: embeddings.parquet), and manifest.json."""
    import anndata as ad

    kind = modality.of(plan.input)
    results = shard_results(plan)
    embeddings = ShardedEmbeddings(plan)
    obs_source = copyable_obs(plan.input.path) if kind.name == "cells" else None
    # cells: the input's obs group is copied as stored (h5py), never read into Python; other inputs: their table
    table = kind.metadata(plan.input) if obs_source is None else None
    adata = ad.AnnData(obs=table)
    adata.uns["helical_airflow"] = {
        "run_key": plan.run_key,
        "model": plan.params.model,
        "fixture": plan.fixture,
        "manifest": "manifest.json",
    }
    out = plan.out_path / "embeddings.h5ad"
    key = embeddings_key(plan)
    write_with(out, lambda tmp: write_embeddings_h5ad(tmp, adata, key, embeddings, obs_from=obs_source))
    extras = kind.merge_extras(table, lambda: np.asarray(embeddings)) if table is not None else {}  # cells: none
    for name, writer in extras.values():
        write_with(plan.out_path / name, writer)
    manifest = build_manifest(plan, results)
    if extras:
        outputs = {**manifest.outputs, **{key: name for key, (name, _) in extras.items()}}
        manifest = manifest.model_copy(update={"outputs": outputs})
    write_json(manifest_file(plan), manifest)
    return manifest


def copyable_obs(path: str | Path) -> Path | None:
    """The .h5ad input whose obs group merge can copy as stored: a dataframe in anndata's current encoding (0.2.0),
    which anndata reads the same from either file. None for older layouts (merge reads and rewrites those)."""
    try:
        with h5py.File(path, "r") as h5:
            obs = h5.get("obs")
            attrs = obs.attrs if isinstance(obs, h5py.Group) else {}
            current = attrs.get("encoding-type") == "dataframe" and attrs.get("encoding-version") == "0.2.0"
            return Path(path) if current else None
    except OSError:
        return None


def _obs_rows(path: Path) -> int:
    with h5py.File(path, "r") as h5:
        obs = h5["obs"]
        return int(obs[str(obs.attrs["_index"])].shape[0])


def write_embeddings_h5ad(
    path: Path, adata: Any, key: str, embeddings: ShardedEmbeddings, block_rows: int | None = None,
    obs_from: Path | None = None,
) -> None:  # fmt: skip
    """anndata writes obs and uns; obsm[key] is then filled in row blocks from the shards, with the encoding anndata
    gives a dense array (`encoding-type: array`), so readers see what `adata.obsm[key] = matrix` would have written,
    while memory holds one block, never the matrix.

    `obs_from`: an .h5ad whose obs group (copyable_obs) replaces adata's (then empty) one, copied by HDF5 as stored.
    Why: reading 1,000,000 cell names into Python strings and anndata writing them back was merge's cost that grew
    with the cells (bench/scale.py, docs/benchmarks.md: 55.5 s and 328 MB at 1M cells vs 9.6 s and 209 MB at 100k;
    copied: 10.8 s and 218 MB at 1M)."""
    rows = _obs_rows(obs_from) if obs_from is not None else len(adata)
    if rows != len(embeddings):
        raise ShardError("E304", f"{len(embeddings)} embedding rows for {rows} rows of metadata",
                         "delete the run folder's shards/ and embed them again")  # fmt: skip
    adata.write_h5ad(path)
    with h5py.File(path, "a") as h5:
        if obs_from is not None:
            with h5py.File(obs_from, "r") as source:
                del h5["obs"]
                source.copy(source["obs"], h5, "obs")
        matrix = h5["obsm"].create_dataset(key, shape=embeddings.shape, dtype=embeddings.dtype)
        matrix.attrs.update({"encoding-type": "array", "encoding-version": "0.2.0"})
        for start, block in embeddings.blocks(block_rows):
            matrix[start : start + len(block)] = block


def build_manifest(plan: Plan, results: list[ShardResult]) -> Manifest:
    return Manifest(
        run_key=plan.run_key,
        dataset=plan.dataset,
        input=plan.input,
        model=plan.params.model,
        model_family=plan.model_family,
        helical_model_name=plan.helical_model_name,
        fixture=plan.fixture,
        fixture_note=FIXTURE_NOTE if plan.fixture else None,
        weights_checksum=plan.weights_checksum,
        weights_files=plan.weights_files,
        params=plan.params,
        versions=package_versions(),
        host=host_info(results),
        shards=results,
        total_cells=sum(r.cells for r in results),
        total_shard_seconds=round(sum(r.seconds for r in results), 3),
        max_peak_rss_mb=max(r.peak_rss_mb for r in results),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        outputs={
            "embeddings": "embeddings.h5ad",
            "obsm_key": embeddings_key(plan),
            "shards": "shards/<i>.npy",
            "report": "report.html",
        },
        **canonical_genes(results),
    )


def canonical_genes(results: list[ShardResult]) -> dict[str, Any]:
    """The canonical gene list's hash and count, when every shard recorded the same one."""
    seen = {(r.canonical_genes_sha256, r.canonical_genes) for r in results}
    if len(seen) != 1 or None in next(iter(seen)):
        if len(seen) > 1:
            log.warning("the shards saw different gene lists; the manifest records no canonical gene hash")
        return {}
    sha256, count = next(iter(seen))
    return {"canonical_genes_sha256": sha256, "canonical_genes": count}


FIXTURE_NOTE = (
    "Made with an offline FIXTURE cache (tiny random-weight models, synthetic vocabulary) built by "
    "`helical-airflow models fixture`. These embeddings test the pipeline; they carry no biology."
)


def host_info(results: list[ShardResult]) -> dict[str, str]:
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": str(os.cpu_count()),
        "shard_hosts": ",".join(sorted({r.host for r in results})),
        "devices": ",".join(sorted({r.device for r in results})),
    }
