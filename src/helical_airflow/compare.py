"""Compare models on the user's own data: the `compare` job, built from the embedding pipeline's own steps.

    INPUT, models M1..Mn --plan_comparison--> one embedding run per model (pipeline.prepare: validated, planned,
    each keyed by its run key; a model of another modality than INPUT is refused first, E1001)
      --embed (pipeline.run_plan per model in the CLI; the workflow DAG per model in Airflow: finished runs reused)
      --score--> the same cells (a seeded, stratified sample above --max-cells) scored for every model and for the
      PCA baseline with scib-metrics' Benchmarker: bio conservation (isolated labels, Leiden NMI/ARI, label
      silhouette, cLISI) and, with a batch key, batch correction (BRAS, scib-metrics' batch silhouette; iLISI,
      kBET, graph connectivity, PCR comparison); aggregated as scIB does (0.6 bio + 0.4 batch); beside them each
      model's cost from its run's manifest (embedding seconds, cells/s, peak memory, device)

written in a comparison folder keyed by its inputs (`OUT/<dataset>/compare/<comparison_key>/`): comparison.json
(`ComparisonResult`), comparison.html (the ranked table, a UMAP/PCA per model on one grid, cost against score);
an MLflow parent run with one child per model when tracking is configured (never fails the comparison); the
scores as StatsD gauges (`helical_compare_score{score, model, dataset, comparison_key}` in Prometheus).
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from . import figures, labels, modality, pipeline, report, scores, settings, telemetry, tracking
from .errors import ConfigError
from .models import get_model
from .plan import load_plan
from .spec import Manifest, Plan, RunParams, ShardResult
from .store import ShardedEmbeddings, load_manifest, manifest_file, write_json, write_text

log = logging.getLogger(__name__)

COMPARISON_JSON = "comparison.json"
COMPARISON_HTML = "comparison.html"
COMPARISON_PLAN = "comparison_plan.json"
#: bump when the metrics, their aggregation or the outputs change: old comparison.json files are then redone
COMPARE_VERSION = "2"  # 2: the label rule of labels.py ('unknown', 'nan', 'none' unlabelled too)
BASELINE = "PCA"  # the baseline's row: PCA of the log-normalised counts of the same cells (scores.BASELINE)
#: cells scored at most (a seeded, label-stratified sample above this). scib-metrics' kBET and BRAS run per label
#: on the CPU: on data/sample.h5ad (700 cells, 2 cores shared with other jobs) kBET took 6-14 s per embedding once
#: JAX had compiled it (145 s for the first call) and BRAS 4 s; both grow with the cells per label
MAX_CELLS = 10_000
BIO_WEIGHT, BATCH_WEIGHT = 0.6, 0.4  # scIB's aggregation (Luecken et al. 2022; scib-metrics' Benchmarker)
NO_BIOLOGY = (
    "FIXTURE weights (random tiny models): these embeddings carry no biology, so this ranking carries no biology "
    "either; it tests the comparison job, not the models"
)


class CompareParams(BaseModel):
    """What is compared and how it is scored (each model's embedding side is its RunParams)."""

    model_config = ConfigDict(extra="forbid")

    models: list[str] = Field(min_length=1, description="the models to compare (model names or family names)")
    label_key: str | None = Field(default=None, description="obs column of cell labels; None: a guess")
    batch_key: str | None = Field(default=None, description="obs column of batches: adds batch-correction scores")
    max_cells: int = Field(default=MAX_CELLS, ge=50, description="cells scored at most (a stratified sample above)")
    seed: int = Field(default=0, ge=0, le=2**32 - 1, description="the sample, the clustering and the UMAPs")


class ModelRun(BaseModel):
    """One model's embedding run in the comparison."""

    model: str
    model_family: str
    run_key: str
    run_dir: str
    plan_path: str
    queue: str
    pool: str
    fixture: bool


class ComparisonPlan(BaseModel):
    """What `score` needs: written as comparison_plan.json in the comparison folder (the DAG hands over its path)."""

    comparison_key: str
    compare_version: str
    input: str
    dataset: str
    input_sha256: str
    cells: int
    params: CompareParams
    label_key: str
    label_source: str  # given | guessed
    runs: list[ModelRun]
    out_dir: str

    @property
    def out_path(self) -> Path:
        return Path(self.out_dir)

    @property
    def fixture(self) -> bool:
        return any(run.fixture for run in self.runs)


class ModelCost(BaseModel):
    """A model's cost on this input, from its run's manifest (every shard, as first embedded)."""

    embedding_seconds: float  # the shards' seconds, model loads included
    model_load_seconds: float
    cells_per_second: float
    peak_rss_mb: float
    peak_gpu_mb: float | None
    device: str
    precision: str


class Row(BaseModel):
    """One line of the ranked table: a model, or the PCA baseline."""

    name: str
    rank: int
    baseline: bool
    model_family: str | None = None
    run_key: str | None = None
    run_dir: str | None = None
    fixture: bool = False
    embedding_dim: int
    metrics: dict[str, float]  # scib-metrics' names (Isolated labels, Leiden NMI, ..., KBET, PCR comparison)
    bio_conservation: float
    batch_correction: float | None
    total: float  # what the table is ranked by: 0.6 bio + 0.4 batch, or bio alone without a batch key
    cost: ModelCost | None = None
    mlflow_run_id: str | None = None  # the model's embedding run in MLflow, when it was tracked


class ComparisonResult(BaseModel):
    """comparison.json: what was compared, on which cells, how each model scored and what it cost."""

    comparison_key: str
    compare_version: str
    created_at: str
    input: str
    dataset: str
    input_sha256: str
    out_dir: str  # the comparison folder
    params: CompareParams
    label_key: str
    label_source: str
    batch_key: str | None
    fixture: bool
    cells: int  # in the input
    scored_cells: int  # the same cells for every row
    sampled: bool  # a seeded, label-stratified sample of max_cells
    sample_seed: int
    left_out: dict[str, int]  # cells not scored, by reason (no label, an embedding with NaN, the sample)
    metrics: dict[str, list[str]]  # metric type -> metric names
    aggregation: str
    scib_metrics_version: str
    scoring_seconds: float
    rows: list[Row]  # ranked, best first
    warnings: list[str]
    outputs: dict[str, str]
    tracking: dict[str, str] | None = None


# ---- plan -------------------------------------------------------------------------------------------------------


def check_models(input_path: str | Path, models: list[str]) -> list[str]:
    """The models' canonical names; unknown names fail with the registry's E201, a name twice with E1004 and a
    model of another modality than the input with E1001, all before anything is read or embedded."""
    specs = [get_model(name) for name in models]
    names = [spec.name for spec in specs]
    twice = ", ".join(sorted({n for n in names if names.count(n) > 1}))
    if twice:
        raise ConfigError(
            "E1004", f"model(s) listed more than once: {twice} (family names stand for their default model)",
            "list each model once in --models",
        )  # fmt: skip
    kind = modality.for_path(input_path)
    wrong = [f"{spec.name} ({modality.for_model(spec).name})" for spec in specs
             if modality.for_model(spec).name != kind.name]  # fmt: skip
    if wrong:
        fitting = [n for n, s in zip(names, specs, strict=True) if modality.for_model(s).name == kind.name]
        raise ConfigError(
            "E1001",
            f"{Path(input_path).name} holds {kind.name}, but these models read another kind of input: "
            f"{', '.join(wrong)}; every model compared must embed the same rows",
            "compare models of one modality: drop those from --models"
            + (f" (those that fit: {', '.join(fitting)})" if fitting else "")
            + "; `helical-airflow models list` shows each model's modality",
        )  # fmt: skip
    return names


def choose_keys(input_path: str | Path, params: CompareParams) -> tuple[str, str]:
    """The label column (given or guessed) and where it came from; E1002 for a label or batch column that is not
    there or cannot be scored, E1003 when no label column can be guessed."""
    table = modality.for_path(input_path).label_table(input_path)
    table = pd.DataFrame() if table is None else table
    columns = ", ".join(map(str, table.columns[:30])) or "none"
    for key, what in ((params.label_key, "label"), (params.batch_key, "batch")):
        if key is not None and key not in table.columns:
            raise ConfigError(
                "E1002", f"{Path(input_path).name} has no {what} column {key!r} (its columns: {columns})",
                f"pass one of the columns listed as --{what}-key",
            )  # fmt: skip
    if params.batch_key is not None and table[params.batch_key].nunique(dropna=True) < 2:
        raise ConfigError(
            "E1002", f"batch column {params.batch_key!r} has fewer than two batches: batch correction cannot be scored",
            "pass a column with at least two batches as --batch-key, or leave --batch-key out",
        )  # fmt: skip
    choice = scores.choose_label(table, params.label_key)
    if choice.key is None:
        raise ConfigError(
            "E1003", f"no label column to score against in {Path(input_path).name} ({choice.note}; columns: {columns})",
            "name the cells' label column with --label-key (e.g. cell_type): every metric compares with it",
        )  # fmt: skip
    if params.label_key is not None:
        problem = scores.usable_label_problem(table, params.label_key)
        if problem:
            raise ConfigError("E1002", f"label column {params.label_key!r}: {problem}",
                              "pass a column of cell labels with at least two classes as --label-key")  # fmt: skip
    return choice.key, choice.source or "given"


def comparison_key(sha256: str, runs: list[ModelRun], params: CompareParams, label_key: str) -> str:
    blob = json.dumps({"input": sha256, "runs": sorted(r.run_key for r in runs), "label_key": label_key,
                       "params": params.model_dump(exclude={"models", "label_key"}), "version": COMPARE_VERSION},
                      sort_keys=True)  # fmt: skip
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def plan_comparison(
    input_path: str | Path, params: CompareParams, run_params: Callable[[str], RunParams], out_root: Path
) -> ComparisonPlan:
    """Check the models and columns, validate and plan one embedding run per model (nothing is embedded), write
    comparison_plan.json. `run_params(model)`: that model's RunParams (the CLI's options; the DAG's Params)."""
    names = check_models(input_path, params.models)
    label_key, source = choose_keys(input_path, params)
    plans = [pipeline.prepare(input_path, run_params(name), out_root) for name in names]
    runs = [
        ModelRun(model=p.params.model, model_family=p.model_family, run_key=p.run_key, run_dir=p.out_dir,
                 plan_path=str(p.plan_file), queue=get_model(p.params.model).profile.queue,
                 pool=get_model(p.params.model).profile.pool, fixture=p.fixture)
        for p in plans
    ]  # fmt: skip
    first = plans[0]
    key = comparison_key(first.input.sha256, runs, params, label_key)
    cplan = ComparisonPlan(
        comparison_key=key, compare_version=COMPARE_VERSION, input=first.input.path, dataset=first.dataset,
        input_sha256=first.input.sha256, cells=first.input.n_cells, params=params, label_key=label_key,
        label_source=source, runs=runs, out_dir=str(out_root / first.dataset / "compare" / key),
    )  # fmt: skip
    write_json(cplan.out_path / COMPARISON_PLAN, cplan)
    if cplan.fixture:
        log.warning("compare: %s", NO_BIOLOGY)
    return cplan


def load_comparison_plan(path: str | Path) -> ComparisonPlan:
    return ComparisonPlan.model_validate_json(Path(path).read_text())


# ---- embed (the CLI; the DAG triggers the workflow DAG per model) ------------------------------------------------


def embed(
    cplan: ComparisonPlan, tracking_uri: str | None = None, on_shard: Callable[[Plan, ShardResult], None] | None = None
) -> dict[str, int]:
    """Each model's run through the pipeline (finished runs and shards reused by their run key); returns the shards
    embedded by this call per model (0: the run was reused)."""
    embedded: dict[str, int] = {}
    for run in cplan.runs:
        plan = load_plan(run.plan_path)
        count = [0]

        def counted(p: Plan, result: ShardResult, count: list[int] = count) -> None:
            count[0] += not result.reused
            if on_shard:
                on_shard(p, result)

        pipeline.run_plan(plan, counted, label_key=cplan.label_key, tracking_uri=tracking_uri)
        embedded[run.model] = count[0]
    return embedded


# ---- score ------------------------------------------------------------------------------------------------------


def _finite_rows(x: ShardedEmbeddings) -> np.ndarray:
    """Per row: every value finite (streamed in blocks)."""
    finite = np.zeros(len(x), dtype=bool)
    for start, block in x.blocks():
        finite[start : start + len(block)] = np.isfinite(block).all(axis=1)
    return finite


def labelled_cells(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(each cell's label as stripped text, mask of the labelled cells), by the rule annotation and fine-tuning read
    a label column with (labels.py: missing, empty, 'unknown', 'nan', 'none' are unlabelled), so a comparison never
    scores 'unknown' as a cell type that a classifier trained on the same column would leave out."""
    values = labels.normalise(column)
    labelled = pd.notna(values)
    return np.where(labelled, values, "").astype(str), labelled


def stratified_sample(labels: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Sorted row positions: all rows up to `limit`, else each label's share of `limit` (at least one cell of every
    label, so a rare type stays in), drawn with a seeded generator."""
    n = len(labels)
    if n <= limit:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    names, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    take = np.maximum(1, np.floor(counts * limit / n).astype(int))
    chosen = [rng.choice(np.flatnonzero(inverse == i), size=min(int(k), int(c)), replace=False)
              for i, (k, c) in enumerate(zip(take, counts, strict=True))]  # fmt: skip
    return np.sort(np.concatenate(chosen))


def _cost(manifest: Manifest) -> ModelCost:
    shards = manifest.shards
    seconds = manifest.total_shard_seconds
    gpu = [s.peak_gpu_mb for s in shards if s.peak_gpu_mb is not None]
    ran = report.executed(shards)
    return ModelCost(
        embedding_seconds=round(seconds, 3),
        model_load_seconds=round(sum(s.model_load_seconds for s in shards), 3),
        cells_per_second=round(manifest.total_cells / seconds, 2) if seconds else 0.0,
        peak_rss_mb=round(manifest.max_peak_rss_mb, 1),
        peak_gpu_mb=round(max(gpu), 1) if gpu else None,
        device=ran["device"],
        precision=ran["precision"],
    )


def _neighbours(x: np.ndarray, k: int) -> Any:
    """Exact neighbours (scikit-learn) for the Benchmarker: its default, pynndescent, spent 73 s compiling with
    numba before scoring 700 cells, where an exact search takes 0.3-0.4 s per embedding (measured on
    data/sample.h5ad); exact also means the same neighbours on every run."""
    from scib_metrics.nearest_neighbors import NeighborsResults
    from sklearn.neighbors import NearestNeighbors

    distances, indices = NearestNeighbors(n_neighbors=min(k, len(x) - 1) + 1).fit(x).kneighbors(x)
    return NeighborsResults(indices=indices[:, 1:], distances=distances[:, 1:])


def benchmark(
    embeddings: dict[str, np.ndarray], labels: np.ndarray, batches: np.ndarray | None, seed: int
) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """scib-metrics' Benchmarker over the embeddings (the PCA baseline among them): one row per embedding, its
    metrics and the aggregates (Bio conservation, Batch correction and Total with a batch key)."""
    import anndata as ad
    from scib_metrics.benchmark import BatchCorrection, Benchmarker, BioConservation

    obs = pd.DataFrame({"label": labels.astype(str), "batch": batches.astype(str) if batches is not None else "all"},
                       index=[str(i) for i in range(len(labels))])  # fmt: skip
    adata = ad.AnnData(obs=obs)
    for name, x in embeddings.items():
        adata.obsm[name] = np.asarray(x, dtype=np.float32)
    bio = BioConservation(nmi_ari_cluster_labels_leiden={"seed": seed}, nmi_ari_cluster_labels_kmeans=False)
    batch = BatchCorrection() if batches is not None else None
    bench = Benchmarker(adata, batch_key="batch", label_key="label", embedding_obsm_keys=list(embeddings),
                        bio_conservation_metrics=bio, batch_correction_metrics=batch,
                        pre_integrated_embedding_obsm_key=BASELINE, progress_bar=False)  # fmt: skip
    bench.prepare(neighbor_computer=_neighbours)
    # scib-metrics logs an INFO line through a console handler of its own for every label kBET skips (one batch or
    # too few cells: 4-5 lines per embedding on the 200-cell sample with two batches); warnings still show
    scib_log = logging.getLogger("scib_metrics")
    level = scib_log.level
    scib_log.setLevel(logging.WARNING)
    try:
        bench.benchmark()
    finally:
        scib_log.setLevel(level)
    results = bench.get_results(min_max_scale=False)
    kinds = results.loc["Metric Type"]
    metrics: dict[str, list[str]] = {}
    for name, kind in kinds.items():
        if kind != "Aggregate score":
            metrics.setdefault(str(kind), []).append(str(name))
    return results.drop(index="Metric Type").astype(np.float64), metrics


def _current(cplan: ComparisonPlan) -> ComparisonResult | None:
    files = [cplan.out_path / name for name in (COMPARISON_JSON, COMPARISON_HTML)]
    if not all(f.is_file() for f in files):
        return None
    try:
        result = ComparisonResult.model_validate_json(files[0].read_text())
    except ValueError:
        return None
    return result if result.comparison_key == cplan.comparison_key else None


def score(cplan: ComparisonPlan, tracking_uri: str | None = None) -> ComparisonResult:
    """Score every model's finished run and the PCA baseline on the same cells; writes comparison.json and .html,
    tracks it in MLflow and sends the scores to StatsD. A comparison already in its folder is returned as it is
    (its key holds the input, every run key and the params)."""
    existing = _current(cplan)
    if existing is not None:
        log.info("comparison %s is current in %s", cplan.comparison_key, cplan.out_dir)
        return _track(cplan, existing, tracking_uri)
    plans = [load_plan(run.plan_path) for run in cplan.runs]
    for plan in plans:
        if not manifest_file(plan).is_file():
            raise ConfigError(
                "E1005", f"the run of {plan.params.model} ({plan.run_key}) has not finished: no {manifest_file(plan)}",
                "embed every model first (`helical-airflow compare` does; in Airflow the comparison DAG waits for each "
                "workflow run), then score again",
            )  # fmt: skip
    manifests = [load_manifest(plan) for plan in plans]
    started = time.monotonic()
    kind = modality.of(plans[0].input)
    table = kind.label_columns(kind.metadata(plans[0].input))
    labels_all, labelled = labelled_cells(table[cplan.label_key])
    left_out: dict[str, int] = {"no label": int((~labelled).sum())}
    # each model's embeddings stay on disk: the finite check streams them in blocks, then only the scored rows are
    # read (a million cells x several models never sit in memory at once)
    full = {run.model: ShardedEmbeddings(plan) for run, plan in zip(cplan.runs, plans, strict=True)}
    finite = np.logical_and.reduce([_finite_rows(x) for x in full.values()])
    left_out["an embedding with NaN (no known gene)"] = int((labelled & ~finite).sum())
    candidates = np.flatnonzero(labelled & finite)
    picked = stratified_sample(labels_all[candidates], cplan.params.max_cells, cplan.params.seed)
    rows = candidates[picked]
    left_out["sample"] = len(candidates) - len(rows)
    baseline = kind.baseline(plans[0], rows)
    embeddings: dict[str, np.ndarray] = {}
    if baseline.features is not None:
        embeddings[BASELINE] = baseline.features()
    embeddings.update({name: x[rows] for name, x in full.items()})
    batches = table[cplan.params.batch_key].astype(str).to_numpy()[rows] if cplan.params.batch_key else None
    results, metrics = benchmark(embeddings, labels_all[rows], batches, cplan.params.seed)
    result = _result(cplan, manifests, results, metrics, embeddings, len(rows), left_out,
                     time.monotonic() - started)  # fmt: skip
    write_text(cplan.out_path / COMPARISON_HTML, render_report(cplan, result, embeddings, labels_all[rows]))
    write_json(cplan.out_path / COMPARISON_JSON, result)  # last: its presence says the report is there too
    emit_scores(result)
    return _track(cplan, result, tracking_uri)


def _result(
    cplan: ComparisonPlan, manifests: list[Manifest], results: pd.DataFrame, metrics: dict[str, list[str]],
    embeddings: dict[str, np.ndarray], scored: int, left_out: dict[str, int], seconds: float,
) -> ComparisonResult:  # fmt: skip
    import scib_metrics

    by_model = {m.model: m for m in manifests}
    runs = {run.model: run for run in cplan.runs}
    has_batch = "Batch correction" in results.columns
    made = []
    for name in results.index:
        values = results.loc[name]
        bio = float(values["Bio conservation"])
        batch = float(values["Batch correction"]) if has_batch else None
        total = float(values["Total"]) if has_batch else bio
        run, manifest = runs.get(str(name)), by_model.get(str(name))
        tracking = (manifest.tracking or {}) if manifest else {}
        made.append(Row(
            name=str(name), rank=0, baseline=name == BASELINE, model_family=run.model_family if run else None,
            run_key=run.run_key if run else None, run_dir=run.run_dir if run else None,
            fixture=run.fixture if run else False, embedding_dim=int(embeddings[str(name)].shape[1]),
            metrics={m: round(float(values[m]), 4) for names in metrics.values() for m in names},
            bio_conservation=round(bio, 4), batch_correction=None if batch is None else round(batch, 4),
            total=round(total, 4), cost=_cost(manifest) if manifest else None,
            mlflow_run_id=tracking.get("mlflow_run_id"),
        ))  # fmt: skip
    made.sort(key=lambda r: (-r.total, r.name))
    ranked = [row.model_copy(update={"rank": i + 1}) for i, row in enumerate(made)]
    warnings = [NO_BIOLOGY] if cplan.fixture else []
    if left_out["an embedding with NaN (no known gene)"]:
        warnings.append(f"{left_out['an embedding with NaN (no known gene)']} labelled cells had no gene some model "
                        "knows (a NaN embedding) and were left out for every model")  # fmt: skip
    aggregation = (
        f"Total = {BIO_WEIGHT} x Bio conservation + {BATCH_WEIGHT} x Batch correction (scIB), each the mean of its "
        "metrics, unscaled" if has_batch else "Bio conservation: the mean of its metrics, unscaled (no batch key)"
    )  # fmt: skip
    return ComparisonResult(
        comparison_key=cplan.comparison_key, compare_version=COMPARE_VERSION,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"), input=cplan.input, dataset=cplan.dataset,
        input_sha256=cplan.input_sha256, out_dir=cplan.out_dir, params=cplan.params, label_key=cplan.label_key,
        label_source=cplan.label_source, batch_key=cplan.params.batch_key, fixture=cplan.fixture, cells=cplan.cells,
        scored_cells=scored, sampled=left_out["sample"] > 0, sample_seed=cplan.params.seed, left_out=left_out,
        metrics=metrics, aggregation=aggregation, scib_metrics_version=scib_metrics.__version__,
        scoring_seconds=round(seconds, 1), rows=ranked, warnings=warnings,
        outputs={"comparison": COMPARISON_JSON, "report": COMPARISON_HTML, "plan": COMPARISON_PLAN},
    )  # fmt: skip


def compare(
    input_path: str | Path, params: CompareParams, run_params: Callable[[str], RunParams], out_root: Path,
    tracking_uri: str | None = None, on_plan: Callable[[ComparisonPlan], None] | None = None,
    on_shard: Callable[[Plan, ShardResult], None] | None = None,
) -> tuple[ComparisonResult, dict[str, int]]:  # fmt: skip
    """plan -> embed each model -> score (what the CLI runs; the DAG runs the same three steps as tasks). Returns
    the result and the shards embedded by this call per model."""
    cplan = plan_comparison(input_path, params, run_params, out_root)
    if on_plan:
        on_plan(cplan)
    embedded = embed(cplan, tracking_uri, on_shard)
    return score(cplan, tracking_uri), embedded


# ---- Prometheus (StatsD) and MLflow -----------------------------------------------------------------------------


def score_lines(result: ComparisonResult) -> list[str]:
    """helical.compare.<score>.<model>.<dataset>.<comparison_key> gauges: every metric, the aggregates and the
    rank of each row (monitoring/statsd/mapping.yml: helical_compare_score{score, model, dataset, comparison_key})."""
    lines = []
    for row in result.rows:
        values = {**row.metrics, "bio_conservation": row.bio_conservation, "total": row.total, "rank": row.rank}
        if row.batch_correction is not None:
            values["batch_correction"] = row.batch_correction
        tail = ".".join(telemetry.label(v) for v in (row.name, result.dataset, result.comparison_key))
        for name, value in values.items():
            metric = f"{telemetry.PREFIX}.compare.{telemetry.label(name.lower().replace(' ', '_'))}.{tail}"
            # a gauge's value may not start with a sign ("-n" means "decrease by n"): 0 first, then the change
            lines += [f"{metric}:0|g", f"{metric}:{value:+.6g}|g"] if value < 0 else [f"{metric}:{value:.6g}|g"]
    return lines


def emit_scores(result: ComparisonResult) -> None:
    if telemetry.target_is_set():
        telemetry.send(score_lines(result))


def _track(cplan: ComparisonPlan, result: ComparisonResult, tracking_uri: str | None) -> ComparisonResult:
    """An MLflow parent run for the comparison with one child run per row (scores, cost, the model's embedding run
    id); recorded in comparison.json. A server that is down leaves a warning and `untracked`, never an error."""
    uri = tracking.configured_uri(tracking_uri)
    record = result.tracking or {}
    if not uri or (record.get("status") == "tracked" and record.get("uri") == uri):
        return result
    try:
        tracking.probe(uri)
        for key, value in tracking.HTTP_SETTINGS.items():
            settings.export_default(key, value)
        run_id = _log_mlflow(cplan, result, uri)
        tracked = {"status": "tracked", "uri": uri, "experiment": settings.get().mlflow_experiment,
                   "mlflow_run_id": run_id}  # fmt: skip
    except Exception as exc:  # a finished comparison never fails because of its tracking
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        log.warning("MLflow tracking of comparison %s at %s failed (%s, probe timeout %.0f s): comparison.json says "
                    "untracked; run the same command again with the server up", cplan.comparison_key, uri, reason,
                    tracking.PROBE_TIMEOUT_S)  # fmt: skip
        tracked = {"status": "untracked", "uri": uri, "error": reason}
    result = result.model_copy(update={"tracking": tracked})
    write_json(cplan.out_path / COMPARISON_JSON, result)
    return result


def _log_mlflow(cplan: ComparisonPlan, result: ComparisonResult, uri: str) -> str:
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = settings.get().mlflow_experiment
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    tags = {"comparison_key": result.comparison_key, "dataset": result.dataset, "fixture": str(result.fixture).lower(),
            "job": "compare", "label_key": result.label_key, "batch_key": result.batch_key or ""}  # fmt: skip
    parent = client.create_run(experiment_id, run_name=f"{result.dataset}-compare-{result.comparison_key}", tags=tags)
    parent_id = parent.info.run_id
    now = int(time.time() * 1000)
    params = {"models": ",".join(r.model for r in cplan.runs), "input_sha256": result.input_sha256,
              "label_key": result.label_key, "batch_key": result.batch_key or "",
              "max_cells": str(result.params.max_cells),
              "seed": str(result.params.seed), "scored_cells": str(result.scored_cells),
              "scib_metrics_version": result.scib_metrics_version}  # fmt: skip
    best = result.rows[0]
    client.log_batch(parent_id, params=[Param(k, v[:6000]) for k, v in params.items()],
                     metrics=[Metric("scored_cells", float(result.scored_cells), now, 0)],
                     tags=[RunTag("helical_airflow", "1"), RunTag("best", best.name)])  # fmt: skip
    for row in result.rows:
        child_tags = {"mlflow.parentRunId": parent_id, "model": row.name, "baseline": str(row.baseline).lower(),
                      "run_key": row.run_key or "", "embedding_mlflow_run_id": row.mlflow_run_id or "",
                      "comparison_key": result.comparison_key}  # fmt: skip
        child = client.create_run(experiment_id, run_name=f"{result.dataset}-compare-{row.name}", tags=child_tags)
        values = {**{k.lower().replace(" ", "_"): v for k, v in row.metrics.items()}, "rank": float(row.rank),
                  "bio_conservation": row.bio_conservation, "total": row.total}  # fmt: skip
        if row.batch_correction is not None:
            values["batch_correction"] = row.batch_correction
        if row.cost:
            values |= {"embedding_seconds": row.cost.embedding_seconds, "cells_per_second": row.cost.cells_per_second,
                       "peak_rss_mb": row.cost.peak_rss_mb}  # fmt: skip
        client.log_batch(child.info.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in values.items()])
        client.set_terminated(child.info.run_id, "FINISHED")
    for name in (COMPARISON_JSON, COMPARISON_HTML):
        client.log_artifact(parent_id, str(cplan.out_path / name))
    client.set_terminated(parent_id, "FINISHED")
    return str(parent_id)


# ---- comparison.html --------------------------------------------------------------------------------------------


def _shade(value: float, low: float, high: float) -> str:
    """A cell's background: scIB's green for the best of the column, white for the worst."""
    share = 0.0 if high <= low else (value - low) / (high - low)
    g = int(255 - 120 * share)
    return f"background: rgb({g}, {int(255 - 40 * share)}, {g})"


def ranked_table(result: ComparisonResult) -> str:
    """The scIB-style table: one row per model and the baseline, best first; each metric shaded within its column,
    grouped by metric type, the aggregates last; the cost beside."""
    e = html.escape
    groups = list(result.metrics.items())
    aggregates = ["bio_conservation", *(["batch_correction"] if result.batch_key else []), "total"]
    head1 = (
        "<tr><th rowspan=2>rank</th><th rowspan=2>model</th>"
        + "".join(f"<th colspan={len(names)}>{e(kind)}</th>" for kind, names in groups)
        + f"<th colspan={len(aggregates)}>aggregate score</th><th colspan=4>cost on this input</th></tr>"
    )
    head2 = (
        "<tr>"
        + "".join(f"<th>{e(n)}</th>" for _, names in groups for n in names)
        + "".join(f"<th>{e(a.replace('_', ' '))}</th>" for a in aggregates)
        + "<th>embedding s</th><th>cells/s</th><th>peak RSS MB</th><th>device</th></tr>"
    )

    def value(row: Row, name: str) -> float:
        return float(row.metrics[name] if name in row.metrics else getattr(row, name))

    columns = [n for _, names in groups for n in names] + aggregates
    bounds = {c: (min(value(r, c) for r in result.rows), max(value(r, c) for r in result.rows)) for c in columns}
    body = []
    for row in result.rows:
        name = f"{row.name}{' (baseline)' if row.baseline else ''}{' FIXTURE' if row.fixture else ''}"
        cells = "".join(f"<td style='{_shade(value(row, c), *bounds[c])}'>{value(row, c):.3f}</td>" for c in columns)
        c = row.cost
        cost = (f"<td>{c.embedding_seconds:.1f}</td><td>{c.cells_per_second:,.1f}</td><td>{c.peak_rss_mb:,.0f}"
                f"{f' (GPU {c.peak_gpu_mb:,.0f})' if c.peak_gpu_mb else ''}</td><td>{e(c.device)}</td>"
                if c else "<td colspan=4>(counts, no model)</td>")  # fmt: skip
        body.append(f"<tr><td>{row.rank}</td><th>{e(name)}</th>{cells}{cost}</tr>")
    return f"<table class='ranked'>{head1}{head2}{''.join(body)}</table>"


def scatter_grid(result: ComparisonResult, embeddings: dict[str, np.ndarray], labels: np.ndarray) -> tuple[str, str]:
    """One panel per row (ranked order) on one grid: UMAP when the report draws one (report.umap_enabled), else PCA;
    all coloured by the label."""
    seed = result.params.seed
    with_umap = report.umap_enabled() and len(labels) > 3
    limit = report.MAX_UMAP_POINTS if with_umap else report.MAX_POINTS
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(labels), min(limit, len(labels)), replace=False))
    kind = "UMAP" if with_umap else "PCA"
    panels = [(f"{kind}: {row.name}", report.umap_2d(embeddings[row.name][keep], seed) if with_umap
               else report.pca_2d(embeddings[row.name][keep])) for row in result.rows]  # fmt: skip
    note = f"A random {len(keep):,} of the {len(labels):,} scored cells. " if len(keep) < len(labels) else ""
    if not with_umap:
        note += f"PCA, not UMAP ({report.UMAP_ENV}=0). "
    return report.scatter_picture(panels, labels[keep], result.label_key), note


def cost_picture(result: ComparisonResult) -> str:
    plt = figures.pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.0), dpi=90)
    for row in result.rows:
        if row.cost is None:
            ax.axhline(row.total, color="#888", ls="--", lw=1, label=f"{row.name} (baseline, no model)")
            continue
        ax.scatter(row.cost.embedding_seconds, row.total, s=40)
        ax.annotate(row.name, (row.cost.embedding_seconds, row.total), fontsize=8, xytext=(4, 4),
                    textcoords="offset points")  # fmt: skip
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel("embedding seconds on this input (every shard, model loads included)")
    ax.set_ylabel("total score" if result.batch_key else "bio conservation")
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return figures.png(fig)


def render_report(
    cplan: ComparisonPlan, result: ComparisonResult, embeddings: dict[str, np.ndarray], labels: np.ndarray
) -> str:
    e = html.escape
    style = report.STYLE.replace("</style>", "table.ranked td{text-align:right}</style>")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>comparison {e(result.dataset)}</title>{style}"
             f"</head><body><h1>Which model for {e(result.dataset)}: {len(cplan.runs)} model(s) and the PCA baseline"
             "</h1>"]  # fmt: skip
    for line in result.warnings:
        parts.append(f"<p class='{'fixture' if line == NO_BIOLOGY else 'fail'}'>{e(line)}</p>")
    parts.append("<h2>Ranked (scib-metrics)</h2>" + ranked_table(result))
    parts.append(f"<p class='small'>{e(result.aggregation)}. Metrics from scib-metrics {e(result.scib_metrics_version)}"
                 f" on the same {result.scored_cells:,} cells for every row.</p>")  # fmt: skip
    sampled = (
        f"a seeded (seed {result.sample_seed}), {e(result.label_key)}-stratified sample of {result.scored_cells:,}"
        if result.sampled else f"all {result.scored_cells:,} scorable cells"
    )  # fmt: skip
    parts.append("<h2>How it was made</h2>" + figures.table([
        ("input", f"{result.input} ({result.cells:,} cells, sha256 {result.input_sha256[:16]})"),
        ("label column", f"{result.label_key} ({result.label_source})"),
        ("batch column", result.batch_key or "none: bio conservation only"),
        ("cells scored", sampled),
        ("cells left out", ", ".join(f"{k}: {n}" for k, n in result.left_out.items())),
        ("runs", "; ".join(f"{r.model}: {r.run_key}" for r in cplan.runs)),
        ("comparison key", result.comparison_key),
        ("scoring seconds", result.scoring_seconds),
    ]))  # fmt: skip
    picture, note = scatter_grid(result, embeddings, labels)
    parts.append(f"<h2>Every model's cells, coloured by {e(result.label_key)}</h2><p class='small'>{e(note)}</p>"
                 f"<img alt='one panel per model' src='data:image/png;base64,{picture}'>")  # fmt: skip
    parts.append("<h2>Cost against score</h2><img alt='cost against score' "
                 f"src='data:image/png;base64,{cost_picture(result)}'>")  # fmt: skip
    parts.append(f"<p class='small'>Details: {COMPARISON_JSON}.</p></body></html>")
    return "\n".join(parts)
