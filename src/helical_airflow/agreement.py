"""Reduced-precision agreement: does a run in fp16 or bf16 give (nearly) the embeddings fp32 would?

A run whose shards ran in fp16/bf16 re-embeds a seeded sample of its rows (`RunParams.agreement_cells`, default 256;
all rows when fewer) in fp32, in the same processes, with the same loaded models; the quality gate then compares the
run's own embeddings of those rows with the fp32 ones:
- per-row cosine (min and median);
- kNN-neighbourhood overlap: each sampled row's k nearest neighbours within the sample (cosine distance, scikit-learn
  NearestNeighbors) in the run's embedding and in fp32, |both| / k, averaged (and its minimum).
Both land in quality.json and the manifest (`quality.precision_agreement`) and in report.html; the gate fails (E404)
below the floors of the model's profile (`ResourceProfile.agreement`, else DEFAULT_THRESHOLDS) or of
HELICAL_AIRFLOW_PRECISION_THRESHOLDS (JSON, any run). A run in fp32 has no agreement block (not applicable).

Where the sample is re-embedded: in the shard that holds the sampled rows, right after that shard was embedded in
reduced precision, by the same process (embed.embed_shard -> reembed_sample). Shards are embedded in many processes
(one per task group, recycled, on several workers), so no single process sees the whole sample; a process that
loads the model again only for the sample would pay the model load (50 s of start-up and loading against 4 s of
embedding for a 250-cell shard on CPU, plan.task_groups) and could land on another device or precision. In the
shard's own process the rows are already read and the model is warm: the extra cost is the fp32 forward pass of
the shard's share of the sample (256 rows in a run of 700 cells: about a third of a shard's compute once). Each
shard writes its rows' fp32 embeddings next to its own (shards/<i>.fp32.npy, before its record marks it
finished, so a resumed run has both or redoes both); the gate, which sees every shard, computes the scores.

fp32 in the same process: the runner's precision is set to fp32 for the second pass (the adapters read it at each
call: helical's autocast dtype, the fast paths, TranscriptFormer's and UCE's autocast), and a CPU run's bf16
autocast (models.runner.reduced_precision) is not entered. The weights stay fp32 throughout (autocast casts per op),
so nothing is reloaded. The run's rows are embedded with their shard's batch mates and the fp32 rows with the
sample's: families whose embedding depends on its batch mates do so within their shard_atol (1e-5), far below
what reduced precision moves.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from . import modality, settings
from .errors import ConfigError
from .models import get_model
from .models.runner import reduced_precision
from .spec import Plan, PrecisionAgreement, PrecisionThresholds, ShardResult, ShardSpec
from .store import save_npy

log = logging.getLogger(__name__)

THRESHOLDS_ENV = "HELICAL_AIRFLOW_PRECISION_THRESHOLDS"
#: most neighbours compared per row; fewer for small samples (a tenth of the sample, at least 1)
MAX_K = 15
# Default floors when the model's profile sets none. Measured bf16 (CPU autocast) against fp32 on the fixture
# models over data/sample.h5ad (700 PBMCs, sample of 256; bench/precision_agreement.py, docs/reliability.md):
# see docs/reliability.md#reduced-precision-agreement for the table. bf16 keeps 8 bits of mantissa (relative
# error ~4e-3 per op), so a cell's vector turning by more than a few degrees (cosine < 0.99) is no longer rounding
# but a numerical failure (an overflow, a softmax gone flat); a neighbourhood keeping under half its members means
# kNN graphs, clusters and UMAPs built on the embedding change. Real weights differ from the tiny random fixtures
# (deeper, wider, trained activations with outliers): a profile may set its own floors from its own measurement.
DEFAULT_THRESHOLDS = PrecisionThresholds(min_cosine=0.99, min_knn_overlap=0.5)


class Sample:
    """The run's agreement sample: sorted row indices, seeded, the same in every process that computes it."""

    def __init__(self, n_rows: int, size: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.rows = np.arange(n_rows) if n_rows <= size else np.sort(rng.choice(n_rows, size, replace=False))
        self.seed = seed

    def within(self, shard: ShardSpec) -> np.ndarray:
        """The sample's rows inside `shard`, as positions within it."""
        inside = self.rows[(self.rows >= shard.start) & (self.rows < shard.stop)]
        return inside - shard.start


def sample_of(plan: Plan) -> Sample:
    return Sample(plan.input.n_cells, plan.params.agreement_cells, plan.params.seed)


def agreement_file(plan: Plan, index: int) -> Path:
    """The fp32 embeddings of the sample's rows in shard `index` (only for shards that ran in fp16/bf16)."""
    return plan.out_path / "shards" / f"{index}.fp32.npy"


@contextlib.contextmanager
def precision_of(runner: Any, precision: str) -> Iterator[None]:
    """The runner set to `precision` while the block runs (the adapters read it at every call)."""
    previous = runner.precision
    runner.precision = precision
    try:
        yield
    finally:
        runner.precision = previous


def embed(runner: Any, rows: Any, device: str) -> np.ndarray:
    """The runner's embeddings of `rows` in its precision: on a CPU in bf16, under torch's bf16 autocast."""
    with reduced_precision(device, runner.precision):
        return np.asarray(runner.embed(rows), dtype=np.float32)


def reembed_sample(plan: Plan, shard: ShardSpec, rows: Any, runner: Any, device: str, precision: str) -> int | None:
    """Re-embed in fp32 the sample's rows of this shard (just embedded in `precision`) and save them; the number of
    rows (None: the shard ran in fp32, nothing to compare, or its model's weights were loaded in reduced precision:
    not measured)."""
    if precision == "fp32":
        return None
    fixed = getattr(runner, "fixed_weights_dtype", None)  # e.g. Cell2Sentence on a GPU: weights loaded in bf16
    if fixed is not None:
        log.warning("the agreement with fp32 is not measured for shard %d: %s loaded its weights in %s",
                    shard.index, plan.params.model, fixed)  # fmt: skip
        return None
    positions = sample_of(plan).within(shard)
    if len(positions):
        with precision_of(runner, "fp32"):
            reference = embed(runner, modality.of(plan.input).take(rows, positions), device)
    else:
        reference = np.zeros((0, 0), dtype=np.float32)
    save_npy(agreement_file(plan, shard.index), reference)
    log.info("%d row(s) of the agreement sample re-embedded in fp32 (the shard ran in %s)", len(positions), precision)
    return len(positions)


# ---- the scores (the quality gate) --------------------------------------------------------------------------


def knn_overlap(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """Per row: the share of its k nearest neighbours (cosine distance, itself left out) that `a` and `b` agree on."""
    from sklearn.neighbors import NearestNeighbors

    def neighbours(x: np.ndarray) -> np.ndarray:
        index = NearestNeighbors(n_neighbors=k + 1, metric="cosine", algorithm="brute").fit(x)
        found = index.kneighbors(x, return_distance=False)
        # a row is its own nearest neighbour, except among exact duplicates: drop itself wherever it is
        return np.array([[j for j in row if j != i][:k] for i, row in enumerate(found)])

    na, nb = neighbours(a), neighbours(b)
    return np.array([len(set(x) & set(y)) / k for x, y in zip(na, nb, strict=True)])


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    norms = np.maximum(np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1), 1e-300)
    return np.clip((a64 * b64).sum(axis=1) / norms, -1.0, 1.0)  # float64 rounding may step past 1


def thresholds_for(plan: Plan) -> tuple[PrecisionThresholds | None, str]:
    """The floors that apply to this run, and where they come from."""
    configured = settings.get().precision_thresholds
    if configured:
        try:
            return PrecisionThresholds.model_validate(json.loads(configured)), THRESHOLDS_ENV
        except ValidationError as exc:  # names the field: "min_cosine: Input should be less than or equal to 1"
            problem = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())
        except ValueError as exc:  # not JSON at all
            problem = str(exc).splitlines()[0]
        raise ConfigError(
            "E405",
            f"{THRESHOLDS_ENV} is not valid precision thresholds JSON: {problem}",
            f'e.g. {THRESHOLDS_ENV}=\'{{"min_cosine": 0.99, "min_knn_overlap": 0.8}}\' (fields: '
            f"{', '.join(PrecisionThresholds.model_fields)}; each between its bounds)",
        )
    profile = get_model(plan.params.model).profile.agreement
    if profile is None:
        return DEFAULT_THRESHOLDS, f"default (the resource profile of {plan.params.model} sets none)"
    return profile, f"resource profile of {plan.params.model}"


def assess(plan: Plan, results: list[ShardResult], embeddings: np.ndarray) -> PrecisionAgreement | None:
    """The run's agreement with fp32 on its sample; None when every shard ran in fp32 (not applicable)."""
    # bf16 sorts first: of mixed fp16/bf16 shards the one with the coarser mantissa is named
    reduced = sorted({r.precision for r in results if r.precision != "fp32" and r.agreement_cells is not None})
    if not reduced:
        return None
    sample = sample_of(plan)
    reference = embeddings[sample.rows].copy()  # rows of shards that ran in fp32 are their own reference
    for shard, result in zip(plan.shards, results, strict=True):
        if result.precision == "fp32":
            continue
        positions = sample.within(shard)
        if result.agreement_cells is None:  # reduced-precision weights (fixed_weights_dtype): rows not compared
            reference[np.searchsorted(sample.rows, positions + shard.start)] = np.nan
            continue
        if result.agreement_cells != len(positions) or not agreement_file(plan, shard.index).is_file():  # lost file
            raise ConfigError(
                "E406",
                f"shard {shard.index} ran in {result.precision} but has no fp32 re-embedding of its "
                f"{len(positions)} sampled row(s) ({agreement_file(plan, shard.index).name})",
                f"delete {plan.shard_result_file(shard.index)} and run again: the shard is embedded anew, with its "
                "sample",
            )
        if len(positions):
            where = np.searchsorted(sample.rows, positions + shard.start)
            reference[where] = np.load(agreement_file(plan, shard.index))
    ours = embeddings[sample.rows]
    keep = np.isfinite(ours).all(axis=1) & np.isfinite(reference).all(axis=1)  # no known gene: NaN in both
    ours, reference = ours[keep], reference[keep]
    if len(ours) < 2:
        raise ConfigError(
            "E407",
            f"only {len(ours)} row(s) of the agreement sample have an embedding: nothing to compare",
            "raise --agreement-cells (RunParams.agreement_cells) or check why rows have no embedding (run.log)",
        )
    cos = cosines(ours, reference)
    k = max(1, min(MAX_K, len(ours) // 10))
    overlap = knn_overlap(ours, reference, k)
    thresholds, source = thresholds_for(plan)
    # not rounded: bf16 moves a cell's cosine by ~1e-7 on the fixtures, which 6 decimals would show as 1.0
    values = {"cosine_min": float(cos.min()), "cosine_median": float(np.median(cos)),
              "knn_overlap": float(overlap.mean()), "knn_overlap_min": float(overlap.min())}  # fmt: skip
    problems = check(values, thresholds, "/".join(reduced))
    log.info("%s vs fp32 on %d sampled rows: cosine min %.9f median %.9f, kNN overlap (k=%d) %.3f", "/".join(reduced),
             len(ours), values["cosine_min"], values["cosine_median"], k, values["knn_overlap"])  # fmt: skip
    return PrecisionAgreement(
        precision=reduced[0],
        sample_cells=len(ours),
        sample_seed=sample.seed,
        knn_k=k,
        thresholds=thresholds,
        thresholds_source=source,
        passed=not problems,
        problems=problems,
        cosine_min=values["cosine_min"],
        cosine_median=values["cosine_median"],
        knn_overlap=values["knn_overlap"],
        knn_overlap_min=values["knn_overlap_min"],
    )


def check(values: dict[str, float], thresholds: PrecisionThresholds | None, precision: str) -> list[str]:
    """Each floor not met, as a sentence naming the score, its value and the floor."""
    if thresholds is None:
        return []
    checks = [
        ("lowest per-row cosine", values["cosine_min"], thresholds.min_cosine),
        ("mean kNN-neighbourhood overlap", values["knn_overlap"], thresholds.min_knn_overlap),
    ]
    return [
        f"{precision} vs fp32 on the agreement sample: {name} {value:.6g} is below the threshold {floor:g}"
        for name, value, floor in checks
        if floor is not None and value < floor
    ]
