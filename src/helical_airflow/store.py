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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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
    embeddings = load_embeddings(plan)
    table = kind.metadata(plan.input)
    adata = ad.AnnData(obs=table)
    adata.obsm[embeddings_key(plan)] = embeddings
    adata.uns["helical_airflow"] = {
        "run_key": plan.run_key,
        "model": plan.params.model,
        "fixture": plan.fixture,
        "manifest": "manifest.json",
    }
    out = plan.out_path / "embeddings.h5ad"
    write_with(out, lambda tmp: adata.write_h5ad(tmp))
    extras = kind.merge_extras(table, embeddings)
    for name, writer in extras.values():
        write_with(plan.out_path / name, writer)
    manifest = build_manifest(plan, results)
    if extras:
        outputs = {**manifest.outputs, **{key: name for key, (name, _) in extras.items()}}
        manifest = manifest.model_copy(update={"outputs": outputs})
    write_json(manifest_file(plan), manifest)
    return manifest


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
