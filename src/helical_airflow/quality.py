"""The quality gate: embeddings must be finite, of the right shape, and not collapsed to one point."""

from __future__ import annotations

import numpy as np

from .errors import HelicalAirflowError
from .spec import Plan, QualityReport
from .store import load_embeddings, load_manifest, manifest_file, write_json

# Cells whose embeddings are all (nearly) the same point tell us the model saw no signal: every row
# identical gives cosine 1.0 and zero spread. Random-weight fixtures still spread cells out far more than this.
MAX_MEAN_COSINE = 0.9999
MIN_SPREAD = 1e-6
SAMPLE_FOR_COSINE = 2000


class QualityGateError(HelicalAirflowError):
    exit_code = 4


def assess(embeddings: np.ndarray, expected_cells: int, seed: int = 0) -> QualityReport:
    problems: list[str] = []
    n, dim = embeddings.shape if embeddings.ndim == 2 else (len(embeddings), 0)
    shape_ok = embeddings.ndim == 2 and n == expected_cells and dim > 0
    if not shape_ok:
        problems.append(f"shape {embeddings.shape}, expected ({expected_cells}, >0)")
    finite = bool(np.isfinite(embeddings).all())
    if not finite:
        bad = int((~np.isfinite(embeddings)).any(axis=1).sum())
        problems.append(f"{bad} cells have NaN or infinite values")
    # Non-finite rows are reported above; zero them so the spread numbers stay meaningful for the rest.
    safe = np.where(np.isfinite(embeddings), embeddings, 0.0).astype(np.float64) if n else np.zeros((0, max(dim, 1)))
    spread = float(safe.std(axis=0).max()) if n > 1 else 0.0
    cosine = _mean_pairwise_cosine(safe, seed) if n > 1 else 1.0
    if n > 1 and spread < MIN_SPREAD:
        problems.append(f"collapsed: every cell has the same embedding (largest per-dim std {spread:.2e})")
    elif n > 1 and cosine > MAX_MEAN_COSINE:
        problems.append(f"collapsed: mean pairwise cosine {cosine:.6f} > {MAX_MEAN_COSINE}")
    return QualityReport(
        passed=not problems,
        n_cells=n,
        embedding_dim=dim,
        all_finite=finite,
        shape_ok=shape_ok,
        mean_norm=float(np.linalg.norm(safe, axis=1).mean()) if n else 0.0,
        min_std_over_dims=float(safe.std(axis=0).min()) if n > 1 else 0.0,
        mean_pairwise_cosine=cosine,
        problems=problems,
    )


def _mean_pairwise_cosine(x: np.ndarray, seed: int) -> float:
    if len(x) > SAMPLE_FOR_COSINE:
        x = x[np.random.default_rng(seed).choice(len(x), SAMPLE_FOR_COSINE, replace=False)]
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sims = unit @ unit.T
    n = len(unit)
    return float((sims.sum() - np.trace(sims)) / (n * (n - 1)))


def quality_gate(plan: Plan) -> QualityReport:
    """Assess the merged shards; record the result in quality.json and the manifest."""
    report = assess(load_embeddings(plan), plan.input.n_cells, plan.params.seed)
    write_json(plan.out_path / "quality.json", report)
    if manifest_file(plan).is_file():
        manifest = load_manifest(plan).model_copy(update={"quality": report})
        write_json(manifest_file(plan), manifest)
    return report


def require_passed(report: QualityReport) -> None:
    if not report.passed:
        raise QualityGateError(
            "E401",
            "quality gate failed: " + "; ".join(report.problems),
            "check the input counts and the model/precision (fp16 overflow gives inf); see quality.json",
        )
