"""The run folder on disk: atomic writes (a killed process never leaves a half-written file), shard
state, and the merged outputs (embeddings.h5ad, manifest.json).

Files get the mode a plain `open()` would give them (0666 less the process umask), not mkstemp's 0600: with
the local stack's umask 027 (HELICAL_STACK_UMASK) the owner's group can read every output, others cannot.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from . import h5io
from .errors import ShardError
from .spec import Manifest, Plan, ShardResult
from .versions import package_versions


def current_umask() -> int:
    """The process umask, read without changing it (Linux: /proc; elsewhere set and restored at once)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write to a temp file in the same folder, fsync, then rename over the target (mode: 0666 less the umask)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_npy(path: Path, array: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, array)

    _atomic(path, write)


def write_text(path: Path, text: str) -> None:
    def write(tmp: Path) -> None:
        tmp.write_text(text)

    _atomic(path, write)


def write_json(path: Path, data: BaseModel | dict[str, Any]) -> None:
    text = data.model_dump_json(indent=2) if isinstance(data, BaseModel) else json.dumps(data, indent=2)
    write_text(path, text + "\n")


def write_with(path: Path, writer: Callable[[Path], None]) -> None:
    """Atomic write through any writer that takes a file path (e.g. AnnData.write_h5ad)."""
    _atomic(path, writer)


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
    """Stack the shards in row order into embeddings.h5ad (input obs + obsm) and write manifest.json."""
    if plan.input.sequence is not None:  # records, not cells: seqout (also writes embeddings.parquet)
        from . import seqout

        return seqout.merge(plan)
    import anndata as ad

    results = shard_results(plan)
    embeddings = load_embeddings(plan)
    adata = ad.AnnData(obs=h5io.read_obs(plan.input.path))
    adata.obsm[embeddings_key(plan)] = embeddings
    adata.uns["helical_airflow"] = {
        "run_key": plan.run_key,
        "model": plan.params.model,
        "fixture": plan.fixture,
        "manifest": "manifest.json",
    }
    out = plan.out_path / "embeddings.h5ad"
    write_with(out, lambda tmp: adata.write_h5ad(tmp))
    manifest = build_manifest(plan, results)
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
    )


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
