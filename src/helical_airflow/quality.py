"""The quality gate: embeddings must be finite, of the right shape, not collapsed, and, when the input has a
label column, separate its labels about as well as a PCA of the same cells does.

Two kinds of checks:
- Always, for every model (fixtures too): finite, one row per cell, not collapsed (see the thresholds below).
- With a label column (`--label-key`, the DAG's `label_key`, else a guess: scores.choose_label): kNN
  label-transfer accuracy and silhouette of the embeddings and of the PCA baseline (scores.py), recorded in
  quality.json, the manifest, MLflow and Prometheus. They fail the gate only against thresholds: the model's
  resource profile (`ResourceProfile.quality`), or HELICAL_AIRFLOW_QUALITY_THRESHOLDS (JSON, for any run).
  Fixture weights carry no biology, so a fixture run applies only thresholds set by that setting.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import NamedTuple, cast

import numpy as np
import pandas as pd

from . import agreement, modality, scores, settings, telemetry
from .errors import ConfigError, HelicalAirflowError
from .models import get_model
from .spec import LabelScores, Plan, QualityReport, QualityThresholds
from .store import ShardedEmbeddings, load_manifest, manifest_file, save_npy, shard_results, write_json

log = logging.getLogger(__name__)

# Collapse. Measured on data/sample.h5ad (700 PBMCs): mean pairwise cosine of the log1p counts 0.53, of their
# (centred) PCA 0.003; Geneformer's random-weight fixture 0.9977 (it still transfers labels: kNN 0.50 vs 0.81
# for PCA); the scGPT fixture 0.9994, the nearly collapsed embedding of issue 13 (kNN 0.45). Above 0.999 every
# cell lies within ~2.6 degrees (arccos 0.999) of one direction: what is left to tell cells apart is a sliver
# of each vector, which cosine-based tools (kNN graphs, UMAP) see as noise. So the gate fails above 0.999,
# whatever the model (real models that work sit far below: they are trained to tell cell types apart).
MAX_MEAN_COSINE = 0.999
MIN_SPREAD = 1e-6  # largest per-dimension std: below this, every cell has the same embedding
MIN_DISTINCT_FRACTION = 0.5  # fewer distinct rows than half the cells: most cells got one identical vector
SAMPLE_FOR_COSINE = 2000
THRESHOLDS_ENV = "HELICAL_AIRFLOW_QUALITY_THRESHOLDS"
# Real weights, when the model's profile sets no thresholds: kNN label transfer may be at most 0.10 below the
# PCA baseline of the same cells. An embedding that loses that much of what a linear projection of the counts
# keeps is worse than doing nothing; the margin covers the sampling noise of 5-fold kNN on a few hundred cells
# (a few points on the sample) and the small zero-shot gaps of foundation models to PCA reported on PBMCs.
# Silhouettes of real embeddings are small and noisy (PCA on the sample: 0.11), so they are recorded, not gated.
DEFAULT_THRESHOLDS = QualityThresholds(max_knn_drop_vs_pca=0.10)


class QualityGateError(HelicalAirflowError):
    exit_code = 4


def assess(
    embeddings: np.ndarray | ShardedEmbeddings, expected_cells: int, seed: int = 0, unit: str = "cells"
) -> QualityReport:
    """The checks every run gets: finite, shape, not collapsed (`unit`: what a row is, in the messages).

    `embeddings`: a matrix, or the run's shards on disk (store.ShardedEmbeddings), which are streamed in row
    blocks (one pass), so the memory is a block and the cosine sample, not the matrix."""
    one = unit.removesuffix("s")
    problems: list[str] = []
    stats = _array_stats(embeddings, seed) if isinstance(embeddings, np.ndarray) else _streamed_stats(embeddings, seed)
    n, dim = stats.n, stats.dim
    shape_ok = stats.ndim == 2 and n == expected_cells and dim > 0
    if not shape_ok:
        problems.append(f"shape {stats.shape}, expected ({expected_cells}, >0)")
    if not stats.finite:
        problems.append(f"{stats.bad_rows} {unit} have NaN or infinite values")
    sample = stats.sample
    cosine = _mean_pairwise_cosine(sample) if n > 1 else 1.0
    distinct = len(np.unique(sample, axis=0)) / len(sample) if n > 1 else 1.0
    if n > 1 and stats.spread < MIN_SPREAD:
        problems.append(f"collapsed: every {one} has the same embedding (largest per-dim std {stats.spread:.2e})")
    elif n > 1 and cosine > MAX_MEAN_COSINE:
        problems.append(
            f"collapsed: mean pairwise cosine {cosine:.6f} > {MAX_MEAN_COSINE}: every {one} points (nearly) the same "
            f"way, so little is left to tell {unit} apart"
        )
    elif n > 1 and distinct < MIN_DISTINCT_FRACTION:
        problems.append(f"collapsed: only {distinct:.0%} of the {unit} have distinct embeddings")
    return QualityReport(
        passed=not problems,
        n_cells=n,
        embedding_dim=dim,
        all_finite=stats.finite,
        shape_ok=shape_ok,
        mean_norm=stats.mean_norm,
        min_std_over_dims=stats.min_std,
        mean_pairwise_cosine=cosine,
        distinct_fraction=round(distinct, 4),
        cosine_sample_cells=len(sample) if n > 1 else None,
        problems=problems,
    )


class _Stats(NamedTuple):
    n: int
    dim: int
    ndim: int
    shape: tuple[int, ...]
    finite: bool
    bad_rows: int  # rows with a NaN or an infinity
    spread: float  # largest per-dimension std (non-finite values read as 0)
    min_std: float
    mean_norm: float
    sample: np.ndarray  # the rows the cosine and distinct fraction use (float64, non-finite as 0)


def _array_stats(embeddings: np.ndarray, seed: int) -> _Stats:
    n, dim = embeddings.shape if embeddings.ndim == 2 else (len(embeddings), 0)
    finite = bool(np.isfinite(embeddings).all())
    bad = 0 if finite else int((~np.isfinite(embeddings)).any(axis=1).sum())
    # Non-finite rows are reported; zero them so the spread numbers stay meaningful for the rest.
    safe = np.where(np.isfinite(embeddings), embeddings, 0.0).astype(np.float64) if n else np.zeros((0, max(dim, 1)))
    return _Stats(
        n, dim, embeddings.ndim, embeddings.shape, finite, bad,
        spread=float(safe.std(axis=0).max()) if n > 1 else 0.0,
        min_std=float(safe.std(axis=0).min()) if n > 1 else 0.0,
        mean_norm=float(np.linalg.norm(safe, axis=1).mean()) if n else 0.0,
        sample=_sample(safe, seed),
    )  # fmt: skip


def _streamed_stats(x: ShardedEmbeddings, seed: int) -> _Stats:
    """The same numbers as _array_stats, from row blocks in one pass: each block's sums in float64 and its squared
    deviations around its own mean, merged into the running ones (Chan et al.'s pairwise update), not the
    cancellation-prone sum of squares; equal to the whole-matrix ones up to float rounding
    (tests/unit/test_merge_blocks.py). One pass instead of two (means, then spreads): half the reads."""
    n, dim = x.shape
    mean, squares, seen, norms, bad = np.zeros(dim), np.zeros(dim), 0, 0.0, 0
    for _, block in x.blocks():
        ok = np.isfinite(block)
        bad += int((~ok).any(axis=1).sum())
        safe = np.where(ok, block, 0.0).astype(np.float64)
        norms += float(np.linalg.norm(safe, axis=1).sum())
        block_mean = safe.mean(axis=0)
        block_squares = ((safe - block_mean) ** 2).sum(axis=0)
        delta, total = block_mean - mean, seen + len(safe)
        squares += block_squares + delta**2 * (seen * len(safe) / total)
        mean += delta * (len(safe) / total)
        seen = total
    std = np.sqrt(squares / max(n, 1))
    rows = np.random.default_rng(seed).choice(n, SAMPLE_FOR_COSINE, replace=False) if n > SAMPLE_FOR_COSINE else None
    picked = x[rows] if rows is not None else x[np.arange(n)]
    sample = np.where(np.isfinite(picked), picked, 0.0).astype(np.float64)
    return _Stats(
        n, dim, 2, x.shape, bad == 0, bad,
        spread=float(std.max()) if n > 1 else 0.0,
        min_std=float(std.min()) if n > 1 else 0.0,
        mean_norm=norms / n if n else 0.0,
        sample=sample,
    )  # fmt: skip


def _sample(x: np.ndarray, seed: int) -> np.ndarray:
    if len(x) > SAMPLE_FOR_COSINE:
        return x[np.random.default_rng(seed).choice(len(x), SAMPLE_FOR_COSINE, replace=False)]
    return x


def _mean_pairwise_cosine(x: np.ndarray) -> float:
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sims = unit @ unit.T
    n = len(unit)
    return float((sims.sum() - np.trace(sims)) / (n * (n - 1)))


# ---- thresholds --------------------------------------------------------------------------------------------


def thresholds_for(plan: Plan, explicit: QualityThresholds | None = None) -> tuple[QualityThresholds | None, str]:
    """The thresholds that apply to this run, and where they come from."""
    if explicit is not None:
        return explicit, "given"
    configured = settings.get().quality_thresholds
    if configured:
        try:
            return QualityThresholds.model_validate(json.loads(configured)), THRESHOLDS_ENV
        except ValueError as exc:
            raise ConfigError(
                "E403",
                f"{THRESHOLDS_ENV} is not valid thresholds JSON: {str(exc).splitlines()[0]}",
                f"e.g. {THRESHOLDS_ENV}='{{\"max_knn_drop_vs_pca\": 0.05}}' (fields: "
                f"{', '.join(QualityThresholds.model_fields)})",
            ) from None
    if plan.fixture:
        return None, "none: fixture weights carry no biology (scores recorded only; set " + THRESHOLDS_ENV + ")"
    profile = get_model(plan.params.model).profile.quality
    if profile is None:
        return DEFAULT_THRESHOLDS, f"default (the resource profile of {plan.params.model} sets none)"
    return profile, f"resource profile of {plan.params.model}"


def check_thresholds(emb: LabelScores, pca: LabelScores | None, thresholds: QualityThresholds, label: str) -> list[str]:
    """Each failed threshold as a sentence naming the score, its value, the threshold and the baseline (`pca`
    None: an input with no baseline, e.g. sequences; the thresholds relative to it cannot be checked)."""
    problems = []
    checks = [
        ("kNN label-transfer accuracy", emb.knn_accuracy, pca.knn_accuracy if pca else None,
         thresholds.min_knn_accuracy, thresholds.max_knn_drop_vs_pca),
        ("silhouette", emb.silhouette, pca.silhouette if pca else None, thresholds.min_silhouette,
         thresholds.max_silhouette_drop_vs_pca),
    ]  # fmt: skip
    for name, value, base, floor, max_drop in checks:
        if floor is not None and value < floor:
            problems.append(
                f"{name} on obs[{label!r}] is {value:.3f}, below the threshold {floor:.3f}"
                + (f" (PCA baseline of the same cells: {base:.3f})" if base is not None else "")
            )
        if max_drop is not None and base is not None and value < base - max_drop:
            problems.append(
                f"{name} on obs[{label!r}] is {value:.3f}, {base - value:.3f} below the PCA baseline's {base:.3f}; "
                f"the threshold allows at most {max_drop:.3f} below it"
            )
    return problems


# ---- the gate ----------------------------------------------------------------------------------------------


def check_label_key(path: str, label_key: str | None) -> None:
    """Fail early (before any embedding) when the asked-for label column cannot be used (where the input's
    modality can tell from the file alone; otherwise the gate checks it)."""
    if label_key is None:
        return
    kind = modality.for_path(path)
    table = kind.label_table(path)
    if table is not None:
        _check_label(table, label_key, kind.label_fix)


def _check_label(table: pd.DataFrame, label_key: str, fix: str) -> None:
    problem = scores.usable_label_problem(table, label_key)
    if problem:
        raise ConfigError("E402", f"--label-key {label_key}: {problem}", fix)


def quality_gate(
    plan: Plan, label_key: str | None = None, thresholds: QualityThresholds | None = None
) -> QualityReport:
    """Assess the merged shards; record the result in quality.json and the manifest (and qc.npy for the report).

    Every modality gets the same checks and thresholds; the modality gives the rows' metadata (where the label
    column is found) and the baseline the label scores are compared with (cells: a PCA of the counts; records:
    none, so only the thresholds that need no baseline apply)."""
    kind = modality.of(plan.input)
    embeddings = ShardedEmbeddings(plan)  # on disk: streamed by assess, sampled rows read by index below
    report = assess(embeddings, plan.input.n_cells, plan.params.seed, kind.unit)
    table = kind.label_table(plan.input.path)  # cells: the obs columns without the cell names
    if table is None:
        table = kind.metadata(plan.input)
    if label_key is not None:
        _check_label(table, label_key, kind.label_fix)
    choice = scores.choose_label(kind.label_columns(table), label_key)
    rows = scores.sample_rows(plan.input.n_cells, plan.params.seed)
    base = kind.baseline(plan, rows)
    extra: dict[str, object] = {"label_key": choice.key, "label_source": choice.source, "label_note": choice.note}
    if base.features is None:
        extra["baseline"] = base.name
    applied, source = thresholds_for(plan, thresholds)
    problems = list(report.problems)
    if choice.key is not None and report.shape_ok and report.all_finite:
        labels = table[choice.key].to_numpy()[rows]
        keep = scores.scorable(labels)
        n_classes = len(set(labels[keep].astype(str)))
        extra["n_label_categories"] = len(set(labels[pd.notna(labels)].astype(str)))
        if n_classes >= scores.MIN_CATEGORIES:
            emb = scores.label_scores(embeddings[rows][keep], labels[keep], plan.params.seed)
            pca = None
            if base.features is not None:
                pca = scores.label_scores(base.features()[keep], labels[keep], plan.params.seed)
            elif applied is not None and _relative(applied):
                source += f"; the thresholds relative to a PCA baseline are not checked (baseline {base.name})"
            extra |= {"scored_cells": int(keep.sum()), "score_sample_cells": len(rows),
                      "embedding_scores": emb, "pca_scores": pca,
                      "baseline": base.name, "thresholds": applied, "thresholds_source": source}  # fmt: skip
            if applied is not None:
                problems += check_thresholds(emb, pca, applied, choice.key)
            log.info("scores on obs[%r] (%d %s): embeddings kNN %.3f silhouette %.3f%s", choice.key, keep.sum(),
                     kind.unit, emb.knn_accuracy, emb.silhouette,
                     f"; PCA kNN {pca.knn_accuracy:.3f} silhouette {pca.silhouette:.3f}" if pca else "")  # fmt: skip
        else:
            extra["label_note"] = (f"{choice.note}; fewer than 2 labels with {scores.MIN_CLASS_CELLS}+ {kind.unit}: "
                                   "no scores")  # fmt: skip
    # an fp16/bf16 run against fp32 on its seeded sample (agreement.py); None for an fp32 run
    # (agreement reads only the sample's rows, x[rows], which the on-disk matrix serves without loading the rest)
    on_disk = cast(np.ndarray, embeddings)
    precision = agreement.assess(plan, shard_results(plan), on_disk) if report.shape_ok else None
    if precision is not None:
        extra["precision_agreement"] = precision
        problems += precision.problems
    report = report.model_copy(update={**extra, "problems": problems, "passed": not problems})
    if base.qc is not None:  # for the report: it runs as a DAG task of its own
        save_npy(qc_file(plan), base.qc)
    write_json(plan.out_path / "quality.json", report)
    if manifest_file(plan).is_file():
        manifest = load_manifest(plan).model_copy(update={"quality": report})
        write_json(manifest_file(plan), manifest)
    telemetry.emit_quality(plan, report)
    return report


def _relative(thresholds: QualityThresholds) -> bool:
    return thresholds.max_knn_drop_vs_pca is not None or thresholds.max_silhouette_drop_vs_pca is not None


def qc_file(plan: Plan) -> Path:
    return plan.out_path / "qc.npy"


def load_qc(plan: Plan) -> np.ndarray | None:
    """What the gate saved for the report's input QC (cells: counts and genes per cell, rows 0 and 1)."""
    path = qc_file(plan)
    return np.load(path) if path.is_file() else None


def require_passed(report: QualityReport) -> None:
    precision = report.precision_agreement
    if not report.passed and precision is not None and report.problems == precision.problems:
        raise QualityGateError(
            "E404",
            "quality gate failed: reduced-precision agreement with fp32 below its thresholds: "
            + "; ".join(report.problems),
            f"this run's {precision.precision} embeddings are too far from fp32 for the thresholds "
            f"({precision.thresholds_source}): run in fp32 (--precision fp32), or, if this agreement is enough for "
            "your use, lower the floors (HELICAL_AIRFLOW_PRECISION_THRESHOLDS); see quality.json",
        )
    if not report.passed:
        raise QualityGateError(
            "E401",
            "quality gate failed: " + "; ".join(report.problems),
            "check the input counts and the model/precision (fp16 overflow gives inf); for label scores, the "
            "thresholds (quality.json says which) and --label-key; see quality.json",
        )
