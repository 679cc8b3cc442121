"""Annotation from a labelled reference: the `annotate` job, built from the embedding pipeline's own steps.

    reference, query --(pipeline: validate -> plan -> embed shards -> merge -> gate -> report, each reused by its
    run key)--> two embedding runs --> fit a scikit-learn classifier on the reference's embeddings (kNN or
    logistic regression) --> predict the query --> annotations.h5ad, annotation.json, annotation.html

written in the query's run folder (`outputs/<query>/<run_key>/`, beside its embeddings.h5ad):
- annotations.h5ad: the query's obs plus `predicted_<KEY>` (a reference class, or `unknown` below the confidence
  threshold) and `predicted_<KEY>_confidence` (the winning class's probability), the class probabilities in
  obsm[`predicted_<KEY>_probabilities`] with their column order in uns[`predicted_<KEY>_classes`];
- annotation.json (`AnnotationResult`): the classifier and its hyper-parameters, the threshold, both runs' keys,
  the reference's held-out accuracy and macro F1 (stratified k-fold cross-validation, seeded), and, when the
  query has a KEY column too, the query scored against it;
- annotation.html: per-class metrics, confusion matrix, confidence histogram, predicted-label composition and a
  UMAP/PCA of the query's embeddings coloured by prediction.

A second call with the same inputs and options embeds nothing (both runs are reused by their run keys) and, when
annotation.json already holds this annotation (same `annotation_key`), rewrites nothing either.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from . import figures, modality, pipeline, report, scores
from .errors import ConfigError
from .labels import UNKNOWN, check_classes, normalise, read_column
from .spec import Manifest, Plan, RunParams, ShardResult
from .store import embeddings_key, write_json, write_text, write_with

log = logging.getLogger(__name__)

ClassifierName = Literal["knn", "logreg", "finetuned"]  # finetuned: a fine-tuned model (annotate_finetuned.py)
ANNOTATIONS = "annotations.h5ad"
ANNOTATION_JSON = "annotation.json"
ANNOTATION_HTML = "annotation.html"
#: bump when the classifier, its scores or the output layout change: old annotation.json files are then redone
#: (2: labels.py's rule, shared with fine-tuning: "nan"/"none" texts are unlabelled too)
ANNOTATE_VERSION = "2"
#: warn when the query knows less than this fraction of the reference's share of the model's vocabulary: its
#: embeddings are built from fewer genes and sit off the reference's
VOCAB_WARN_RATIO = 0.5


class AnnotateParams(BaseModel):
    """How the query is annotated (the embedding side is RunParams, shared by both inputs)."""

    model_config = ConfigDict(extra="forbid")

    label_key: str = Field(min_length=1, description="the reference's obs column of labels (and the query's, to score)")
    classifier: ClassifierName = "knn"
    n_neighbors: int = Field(default=15, ge=1, description="kNN: neighbours that vote (fewer when a fold is smaller)")
    logreg_c: float = Field(default=1.0, gt=0, description="logistic regression: inverse regularisation strength")
    confidence_threshold: float = Field(
        default=0.5, ge=0, le=1, description=f"below this class probability the prediction is {UNKNOWN!r}"
    )
    cv_folds: int = Field(default=5, ge=2, le=50, description="stratified folds for the reference's held-out scores")
    seed: int = Field(default=0, ge=0, le=2**32 - 1, description="folds' shuffle and the classifier's randomness")


class ClassScores(BaseModel):
    precision: float
    recall: float
    f1: float
    support: int


class HeldOutScores(BaseModel):
    """The reference scored against itself: every cell predicted by a classifier fitted without its fold."""

    folds: int
    cells: int
    accuracy: float
    macro_f1: float
    majority_class_rate: float  # share of the most frequent class: what always guessing it would score


class QueryScores(BaseModel):
    """The query's predictions against its own KEY column (cells with a label only)."""

    cells: int  # labelled query cells scored
    unlabelled_cells: int
    accuracy: float  # `unknown` counts as wrong
    macro_f1: float  # over the classes in the query's column (a class the reference lacks scores 0)
    accuracy_without_threshold: float  # the most probable class for every cell, no `unknown`
    called_fraction: float  # cells given a class (not `unknown`)
    accuracy_of_called: float | None  # accuracy among the cells given a class
    majority_class: str
    majority_class_rate: float  # share of the query's most frequent label: the best constant guess scores this
    per_class: dict[str, ClassScores]
    labels_not_in_reference: dict[str, int]  # query label -> cells; never predictable from this reference
    confusion_labels: list[str]  # rows: the query's labels; columns: these plus `unknown`
    confusion_predicted: list[str]
    confusion: list[list[int]]


class RunRef(BaseModel):
    """One of the two embedding runs the annotation used."""

    input: str
    dataset: str
    run_key: str
    run_dir: str
    cells: int
    vocab_overlap: float
    shards_embedded: int  # by this call (0: every shard was reused)
    shards_reused: int


class FineTunedRef(BaseModel):
    """The fine-tuned model that predicted (annotate --classifier FOLDER|models:/...): where from, what it is."""

    source: str  # what was asked for: a folder or models:/NAME@ALIAS, models:/NAME/VERSION
    folder: str  # the model folder read (for models:/, the registry's copy, downloaded)
    finetune_key: str
    model: str
    family: str
    label_key: str  # the column it was trained on
    trained_on: str  # the training data's path
    trained_on_run_key: str
    val_accuracy: float  # the kept epoch on its own validation split
    val_macro_f1: float
    val_cells: int


class AnnotationResult(BaseModel):
    """annotation.json: how the annotations were made and how good they are."""

    annotation_key: str
    annotate_version: str
    created_at: str
    params: AnnotateParams
    model: str
    model_family: str
    fixture: bool
    weights_checksum: str
    embeddings: str  # the obsm key both runs' embeddings.h5ad hold
    classifier: str  # the estimator, as scikit-learn names it
    hyperparameters: dict[str, Any]
    sklearn_version: str
    reference: RunRef | None  # None: a fine-tuned model predicted (`finetuned`)
    query: RunRef
    classes: list[str]  # the probability columns' order
    reference_class_counts: dict[str, int]
    reference_unlabelled_cells: int  # missing label or labelled `unknown`: left out of the fit
    reference_cv: HeldOutScores | None  # None: a fine-tuned model predicted (its validation scores are in finetuned)
    predicted_counts: dict[str, int]  # including `unknown`
    query_scores: QueryScores | None  # None: the query has no KEY column
    warnings: list[str]
    outputs: dict[str, str]
    finetuned: FineTunedRef | None = None  # set when a fine-tuned model predicted instead of a reference's classifier
    cells_without_known_gene: int = 0  # fine-tuned: cells expressing no gene of the vocabulary (predicted unknown)


# ---- the reference's labels -------------------------------------------------------------------------------------


def label_values(table: pd.DataFrame, key: str) -> np.ndarray:
    """obs[key] as stripped text, None for an unlabelled cell (labels.normalise: NaN, empty, `unknown`, `nan`,
    `none`; `unknown` is also what a prediction below the threshold is called): numbers count (cluster ids)."""
    return normalise(table[key])


def check_reference_labels(table: pd.DataFrame, key: str, folds: int, where: str = "the reference") -> Counter[str]:
    """The reference's class counts; a coded error (labels.py, the codes fine-tuning gives too) when its KEY column
    cannot train and cross-validate a classifier: missing (E701), fewer than two classes (E702), a class with fewer
    cells than folds (E703)."""
    values = read_column(table, key, where, "pass the reference's label column with --label-key (one of the columns "
                         "listed)")  # fmt: skip
    counts = Counter(v for v in values if v is not None)
    fewest = min(counts.values(), default=0)
    fix = (
        f"drop or merge those classes in the reference, or pass --cv-folds {fewest} (the smallest class)"
        if fewest >= 2
        else "drop or merge those classes in the reference: a class needs at least 2 cells"
    )
    return check_classes(values, key, where, folds, f"{folds}-fold stratified cross-validation (one cell per fold)",
                         fix)  # fmt: skip


# ---- classifier -------------------------------------------------------------------------------------------------


def make_classifier(params: AnnotateParams, smallest_train: int) -> Any:
    """The estimator: kNN (cosine distance on the raw embeddings, uniform votes) or a standardised multinomial
    logistic regression. `smallest_train`: cells in the smallest training set it will be fitted on (a kNN cannot
    ask for more neighbours than that)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if params.classifier == "knn":
        k = max(1, min(params.n_neighbors, smallest_train))
        return KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute")
    return make_pipeline(
        StandardScaler(), LogisticRegression(C=params.logreg_c, max_iter=2000, random_state=params.seed)
    )


def hyperparameters(estimator: Any) -> dict[str, Any]:
    """The estimator's parameters as scikit-learn reports them (JSON-able values only; a pipeline's steps
    flattened as step__param)."""
    out: dict[str, Any] = {}
    for name, value in estimator.get_params(deep=True).items():
        if value is None or isinstance(value, str | bool | int | float):
            out[name] = value
    return dict(sorted(out.items()))


def estimator_name(estimator: Any) -> str:
    steps = getattr(estimator, "steps", None)
    return " -> ".join(type(s).__name__ for _, s in steps) if steps else type(estimator).__name__


def held_out_scores(x: np.ndarray, y: np.ndarray, params: AnnotateParams) -> HeldOutScores:
    """Stratified k-fold cross-validation of the classifier on the reference (seeded shuffle)."""
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    folds = StratifiedKFold(n_splits=params.cv_folds, shuffle=True, random_state=params.seed)
    smallest_train = len(y) - max(len(test) for _, test in folds.split(x, y))
    predicted = cross_val_predict(make_classifier(params, smallest_train), x, y, cv=folds)
    counts = Counter(y.tolist())
    return HeldOutScores(
        folds=params.cv_folds,
        cells=len(y),
        accuracy=round(float(accuracy_score(y, predicted)), 4),
        macro_f1=round(float(f1_score(y, predicted, average="macro", zero_division=0)), 4),
        majority_class_rate=round(max(counts.values()) / len(y), 4),
    )


class Prediction(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    classes: list[str]
    probabilities: np.ndarray  # cells x classes
    best: np.ndarray  # the most probable class per cell (str)
    confidence: np.ndarray  # its probability
    predicted: np.ndarray  # best, or UNKNOWN below the threshold


def predict(estimator: Any, x: np.ndarray, threshold: float) -> Prediction:
    probabilities = np.asarray(estimator.predict_proba(x), dtype=np.float32)
    classes = [str(c) for c in estimator.classes_]
    winner = probabilities.argmax(axis=1)
    best = np.asarray(classes, dtype=object)[winner]
    confidence = probabilities[np.arange(len(x)), winner]
    predicted = np.where(confidence >= threshold, best, UNKNOWN).astype(object)
    return Prediction(classes=classes, probabilities=probabilities, best=best, confidence=confidence,
                      predicted=predicted)  # fmt: skip


def score_query(truth: np.ndarray, prediction: Prediction) -> QueryScores:
    """The predictions against the query's own labels (None entries: unlabelled cells, not scored)."""
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

    labelled = np.array([t is not None for t in truth], dtype=bool)
    y = truth[labelled].astype(str)
    predicted = prediction.predicted[labelled].astype(str)
    best = prediction.best[labelled].astype(str)
    counts = Counter(y.tolist())
    majority, majority_n = counts.most_common(1)[0]
    truth_labels = sorted(counts)
    known = set(prediction.classes)
    report_labels = sorted(set(truth_labels) | known)
    per_class_raw = classification_report(y, predicted, labels=report_labels, output_dict=True, zero_division=0)
    per_class = {
        label: ClassScores(precision=round(float(v["precision"]), 4), recall=round(float(v["recall"]), 4),
                           f1=round(float(v["f1-score"]), 4), support=int(v["support"]))
        for label in report_labels
        for v in [per_class_raw[label]]
    }  # fmt: skip
    called = predicted != UNKNOWN
    columns = [*sorted(set(truth_labels) | known), UNKNOWN]
    matrix = confusion_matrix(y, predicted, labels=columns)
    rows = [columns.index(label) for label in truth_labels]
    return QueryScores(
        cells=len(y),
        unlabelled_cells=int((~labelled).sum()),
        accuracy=round(float(accuracy_score(y, predicted)), 4),
        macro_f1=round(float(f1_score(y, predicted, labels=truth_labels, average="macro", zero_division=0)), 4),
        accuracy_without_threshold=round(float(accuracy_score(y, best)), 4),
        called_fraction=round(float(called.mean()), 4),
        accuracy_of_called=round(float(accuracy_score(y[called], predicted[called])), 4) if called.any() else None,
        majority_class=majority,
        majority_class_rate=round(majority_n / len(y), 4),
        per_class=per_class,
        labels_not_in_reference={label: counts[label] for label in truth_labels if label not in known},
        confusion_labels=truth_labels,
        confusion_predicted=columns,
        confusion=matrix[rows].tolist(),
    )


# ---- the job ----------------------------------------------------------------------------------------------------


def annotation_key(reference: Plan, query: Plan, params: AnnotateParams) -> str:
    blob = json.dumps({"reference": reference.run_key, "query": query.run_key, "params": params.model_dump(),
                       "version": ANNOTATE_VERSION}, sort_keys=True)  # fmt: skip
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def check_same_modality(query: str | Path, reference: str | Path) -> None:
    """Both inputs must hold the same kind of rows (E704): one model embeds both into one space."""
    q, r = modality.for_path(query), modality.for_path(reference)
    if q.name != r.name:
        raise ConfigError(
            "E704", f"the query holds {q.name} ({Path(query).name}) but the reference holds {r.name} "
            f"({Path(reference).name}); one model embeds both, so they must be of one kind",
            f"give a reference of {q.name} like the query (the same file type), labelled in --label-key",
        )  # fmt: skip


def obs_table(plan: Plan) -> pd.DataFrame:
    """The rows' metadata where a label can be (an .h5ad's obs; a table's extra columns)."""
    kind = modality.of(plan.input)
    return kind.label_columns(kind.metadata(plan.input))


def annotate(
    query: str | Path,
    reference: str | Path,
    run_params: RunParams,
    params: AnnotateParams,
    out_root: Path,
    tracking_uri: str | None = None,
    on_plan: Callable[[str, Plan], None] | None = None,
    on_shard: Callable[[Plan, ShardResult], None] | None = None,
) -> AnnotationResult:
    """Embed the reference and the query with one model (reusing finished runs), fit the classifier on the
    reference, annotate the query; writes and returns annotation.json's content."""
    check_same_modality(query, reference)
    ref_plan = pipeline.prepare(reference, run_params, out_root)
    ref_table = obs_table(ref_plan)
    check_reference_labels(ref_table, params.label_key, params.cv_folds)  # before anything is embedded
    query_plan = pipeline.prepare(query, run_params, out_root)
    query_table = obs_table(query_plan)
    # the query's run scores its embeddings against KEY too when it can (E402 otherwise: never for annotate)
    query_gate_key = None if scores.usable_label_problem(query_table, params.label_key) else params.label_key
    key = annotation_key(ref_plan, query_plan, params)
    existing = current_annotation(query_plan, key)
    runs: dict[str, tuple[Plan, Manifest, Counter[bool]]] = {}
    jobs = (("reference", ref_plan, params.label_key), ("query", query_plan, query_gate_key))
    if on_plan:  # both before anything is embedded (the CLI opens its log in the query's folder)
        for role, plan, _ in jobs:
            on_plan(role, plan)
    for role, plan, label_key in jobs:
        tally: Counter[bool] = Counter()

        def counted(p: Plan, result: ShardResult, tally: Counter[bool] = tally) -> None:
            tally[result.reused] += 1
            if on_shard:
                on_shard(p, result)

        manifest = pipeline.run_plan(plan, counted, label_key=label_key, tracking_uri=tracking_uri)
        runs[role] = (plan, manifest, tally)
    if existing is not None and not any(tally[False] for _, _, tally in runs.values()):
        log.info("annotation %s is current in %s", key, query_plan.out_dir)
        return existing
    made = _classify(runs, params, key)
    write_outputs(runs["query"][0], made)
    return made.result


def current_annotation(plan: Plan, key: str) -> AnnotationResult | None:
    files = [plan.out_path / name for name in (ANNOTATIONS, ANNOTATION_JSON, ANNOTATION_HTML)]
    if not all(f.is_file() for f in files):
        return None
    try:
        result = AnnotationResult.model_validate_json(files[1].read_text())
    except ValueError:
        return None
    return result if result.annotation_key == key else None


def embedded(plan: Plan) -> tuple[pd.DataFrame, np.ndarray]:
    import anndata as ad

    adata = ad.read_h5ad(plan.out_path / "embeddings.h5ad")
    return adata.obs, np.asarray(adata.obsm[embeddings_key(plan)], dtype=np.float64)


def _run_ref(plan: Plan, manifest: Manifest, tally: Counter[bool]) -> RunRef:
    return RunRef(input=plan.input.path, dataset=plan.dataset, run_key=plan.run_key, run_dir=plan.out_dir,
                  cells=manifest.total_cells, vocab_overlap=round(plan.input.vocab_overlap, 4),
                  shards_embedded=tally[False], shards_reused=tally[True])  # fmt: skip


class Classified(NamedTuple):
    result: AnnotationResult
    query_obs: pd.DataFrame
    query_x: np.ndarray
    prediction: Prediction


def _classify(runs: dict[str, tuple[Plan, Manifest, Counter[bool]]], params: AnnotateParams, key: str) -> Classified:
    import sklearn

    ref_plan, ref_manifest, ref_tally = runs["reference"]
    query_plan, query_manifest, query_tally = runs["query"]
    ref_obs, ref_x = embedded(ref_plan)
    query_obs, query_x = embedded(query_plan)
    labels = label_values(ref_obs, params.label_key)
    keep = np.array([v is not None for v in labels], dtype=bool)
    y = labels[keep].astype(str)
    cv = held_out_scores(ref_x[keep], y, params)
    estimator = make_classifier(params, len(y)).fit(ref_x[keep], y)
    prediction = predict(estimator, query_x, params.confidence_threshold)
    query_scores = None
    if params.label_key in query_obs.columns and any(v is not None for v in label_values(query_obs, params.label_key)):
        query_scores = score_query(label_values(query_obs, params.label_key), prediction)
    warnings = _warnings(ref_plan, query_plan, query_scores, params)
    result = AnnotationResult(
        annotation_key=key,
        annotate_version=ANNOTATE_VERSION,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        params=params,
        model=query_plan.params.model,
        model_family=query_plan.model_family,
        fixture=query_plan.fixture,
        weights_checksum=query_plan.weights_checksum,
        embeddings=embeddings_key(query_plan),
        classifier=estimator_name(estimator),
        hyperparameters=hyperparameters(estimator),
        sklearn_version=sklearn.__version__,
        reference=_run_ref(ref_plan, ref_manifest, ref_tally),
        query=_run_ref(query_plan, query_manifest, query_tally),
        classes=prediction.classes,
        reference_class_counts=dict(sorted(Counter(y.tolist()).items())),
        reference_unlabelled_cells=int((~keep).sum()),
        reference_cv=cv,
        predicted_counts=dict(sorted(Counter(prediction.predicted.tolist()).items())),
        query_scores=query_scores,
        warnings=warnings,
        outputs={"annotations": ANNOTATIONS, "annotation": ANNOTATION_JSON, "report": ANNOTATION_HTML},
    )
    return Classified(result, query_obs, query_x, prediction)


def _warnings(ref: Plan, query: Plan, scored: QueryScores | None, params: AnnotateParams) -> list[str]:
    out = []
    if ref.input.sha256 == query.input.sha256:
        out.append("the query is the reference itself: its scores measure fitting, not transfer")
    out += labels_missing_warning(scored, params.label_key, "the reference")
    if query.input.vocab_overlap < VOCAB_WARN_RATIO * ref.input.vocab_overlap:
        out.append(
            f"the query shares {query.input.vocab_overlap:.0%} of its genes with the model's vocabulary, "
            f"the reference {ref.input.vocab_overlap:.0%}: the query's embeddings rest on fewer genes"
        )
    for line in out:
        log.warning("annotate: %s", line)
    return out


def labels_missing_warning(scored: QueryScores | None, key: str, source: str) -> list[str]:
    """The query's labels that `source` never predicts: a warning, not an error (docs/annotate.md): a query may hold
    cell types the reference lacks; their cells get the nearest known class or `unknown`, and are scored wrong."""
    if not scored or not scored.labels_not_in_reference:
        return []
    listed = ", ".join(f"{k!r} ({n} cells)" for k, n in scored.labels_not_in_reference.items())
    return [f"query labels in {key!r} that {source} lacks (never predicted; scored as wrong): {listed}; fix: add "
            "cells of those classes to the reference (or the fine-tuning data), or read their predictions as "
            "the nearest known class"]  # fmt: skip


def annotations_adata(obs: pd.DataFrame, prediction: Prediction, result: AnnotationResult) -> Any:
    """The query's obs plus the predictions (no embeddings, no counts: those stay in their own files)."""
    import anndata as ad

    key = result.params.label_key
    table = obs.copy()
    categories = [*prediction.classes, UNKNOWN]
    table[f"predicted_{key}"] = pd.Categorical(prediction.predicted.astype(str), categories=categories)
    table[f"predicted_{key}_confidence"] = prediction.confidence.astype(np.float32)
    adata = ad.AnnData(obs=table)
    adata.obsm[f"predicted_{key}_probabilities"] = prediction.probabilities
    adata.uns[f"predicted_{key}_classes"] = np.asarray(prediction.classes, dtype=object)
    adata.uns["annotation"] = {
        "annotation_key": result.annotation_key,
        "classifier": result.classifier,
        "confidence_threshold": result.params.confidence_threshold,
        "unknown_label": UNKNOWN,
        "reference_run_key": result.reference.run_key if result.reference else "",
        "classifier_source": result.finetuned.source if result.finetuned else "",
        "query_run_key": result.query.run_key,
        "model": result.model,
        "fixture": result.fixture,
        "details": ANNOTATION_JSON,
    }
    return adata


def write_outputs(query: Plan, made: Classified) -> None:
    result, query_obs, query_x, prediction = made
    adata = annotations_adata(query_obs, prediction, result)
    write_with(query.out_path / ANNOTATIONS, lambda tmp: adata.write_h5ad(tmp))
    write_text(query.out_path / ANNOTATION_HTML, render_report(query, result, query_x, prediction))
    write_json(query.out_path / ANNOTATION_JSON, result)  # last: its presence says the other two are done


# ---- annotation.html --------------------------------------------------------------------------------------------


def confusion_picture(scores: QueryScores) -> str:
    return figures.confusion(scores.confusion, scores.confusion_labels, scores.confusion_predicted,
                             "query's own label")  # fmt: skip


def confidence_picture(confidence: np.ndarray, threshold: float) -> str:
    plt = figures.pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.0), dpi=90)
    ax.hist(confidence, bins=np.linspace(0, 1, 41), color="#4c72b0")
    ax.axvline(threshold, color="#c00", ls="--", label=f"threshold {threshold:g} ({UNKNOWN} below)")
    ax.set_xlabel("confidence (probability of the predicted class)")
    ax.set_ylabel("cells")
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return figures.png(fig)


def composition_picture(result: AnnotationResult) -> str:
    plt = figures.pyplot()
    predicted = result.predicted_counts
    truth = result.query_scores.per_class if result.query_scores else {}
    names = sorted(set(predicted) | {k for k, v in truth.items() if v.support})
    y = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(7.5, 1.0 + 0.3 * len(names)), dpi=90)
    height = 0.4 if truth else 0.8
    ax.barh(y - (height / 2 if truth else 0), [predicted.get(n, 0) for n in names], height, color="#4c72b0",
            label="predicted")  # fmt: skip
    if truth:
        ax.barh(y + height / 2, [truth[n].support if n in truth else 0 for n in names], height, color="#dd8452",
                label="query's own label")  # fmt: skip
        ax.legend(fontsize=8, frameon=False)
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("cells")
    fig.tight_layout()
    return figures.png(fig)


def scatter_section(plan: Plan, x: np.ndarray, prediction: Prediction, key: str) -> tuple[str, str]:
    """UMAP (when the report draws one, report.umap_enabled) and PCA of the query's embeddings coloured by the
    prediction; and a note on what was left out."""
    rng = np.random.default_rng(plan.params.seed)
    with_umap = report.umap_enabled() and len(x) > 3
    limit = report.MAX_UMAP_POINTS if with_umap else report.MAX_POINTS
    rows = np.sort(rng.choice(len(x), min(limit, len(x)), replace=False))
    sample = x[rows]
    panels = []
    note = f"A random {len(rows):,} of the {len(x):,} cells. " if len(rows) < len(x) else ""
    if with_umap:
        panels.append(("UMAP of the query's embeddings", report.umap_2d(sample, plan.params.seed)))
    else:
        note += f"UMAP left out ({report.UMAP_ENV}=0). "
    panels.append(("PCA of the query's embeddings", report.pca_2d(sample)))
    labels = prediction.predicted[rows].astype(str)
    return report.scatter_picture(panels, labels, f"predicted_{key}"), note


_img = figures.img


def _made_rows(result: AnnotationResult) -> list[tuple[str, object]]:
    p, cv, ref, tuned = result.params, result.reference_cv, result.reference, result.finetuned
    rows: list[tuple[str, object]] = [
        ("model", f"{result.model} ({result.model_family}){' FIXTURE' if result.fixture else ''}")
    ]
    if ref is not None:
        rows.append(("reference", f"{ref.input} ({ref.cells} cells, run {ref.run_key})"))
    if tuned is not None:
        rows.append(
            (
                "fine-tuned model",
                f"{tuned.source} (folder {tuned.folder}, key {tuned.finetune_key}; trained "
                f"on {tuned.trained_on}'s {tuned.label_key!r})",
            )
        )
    rows += [
        ("query", f"{result.query.input} ({result.query.cells} cells, run {result.query.run_key})"),
        ("classifier", f"{result.classifier}: {json.dumps(result.hyperparameters)}"),
        ("confidence threshold", f"{p.confidence_threshold:g} (below it: {UNKNOWN!r})"),
        (
            "reference classes" if ref else "training classes (cells)",
            ", ".join(f"{k} ({n})" for k, n in result.reference_class_counts.items()),
        ),
        (
            "reference cells without a label (left out)" if ref else "training data's unlabelled cells",
            result.reference_unlabelled_cells,
        ),
    ]
    if cv is not None:
        rows.append(
            (
                f"reference held out ({cv.folds}-fold stratified CV, seed {p.seed})",
                f"accuracy {cv.accuracy:.3f}, macro F1 {cv.macro_f1:.3f} (majority class {cv.majority_class_rate:.3f})",
            )
        )
    if tuned is not None:
        rows.append(
            (
                f"fine-tuned model on its validation split ({tuned.val_cells} cells)",
                f"accuracy {tuned.val_accuracy:.3f}, macro F1 {tuned.val_macro_f1:.3f}",
            )
        )
        rows.append(
            ("query cells expressing no gene of the vocabulary (predicted unknown)", result.cells_without_known_gene)
        )
    rows.append(("annotation key", result.annotation_key))
    return rows  # fmt: skip


def render_report(plan: Plan, result: AnnotationResult, x: np.ndarray, prediction: Prediction) -> str:
    p = result.params
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>annotation {e(result.query.dataset)}</title>"
             f"{report.STYLE}</head><body>", f"<h1>Annotation of {e(result.query.dataset)}: predicted {e(p.label_key)}"
             "</h1>"]  # fmt: skip
    if result.fixture:
        parts.append("<p class='fixture'>FIXTURE weights (random tiny models): these embeddings carry no biology; "
                     "the annotation tests the job, not the model.</p>")  # fmt: skip
    for line in result.warnings:
        parts.append(f"<p class='fail'>warning: {e(line)}</p>")
    parts.append("<h2>How it was made</h2>")
    parts.append(figures.table(_made_rows(result)))
    q = result.query_scores
    if q is None:
        parts.append(f"<p>The query has no {e(p.label_key)!s} column: the predictions are not scored.</p>")
    else:
        parts.append(f"<h2>Scored against the query's own {e(p.label_key)}</h2>")
        parts.append(figures.table([
            ("labelled cells scored", f"{q.cells} ({q.unlabelled_cells} without a label)"),
            ("accuracy", f"{q.accuracy:.3f} ({UNKNOWN} counts as wrong)"),
            ("macro F1", f"{q.macro_f1:.3f}"),
            ("accuracy without the threshold", f"{q.accuracy_without_threshold:.3f}"),
            ("cells given a class", f"{q.called_fraction:.1%} (accuracy among them: "
             f"{'n/a' if q.accuracy_of_called is None else f'{q.accuracy_of_called:.3f}'})"),
            ("majority-class rate (always guessing the most frequent label)",
             f"{q.majority_class_rate:.3f} ({q.majority_class})"),
        ]))  # fmt: skip
        rows = {k: (v.precision, v.recall, v.f1, v.support) for k, v in q.per_class.items()}
        parts.append("<h3>Per class</h3>" + figures.per_class_table(rows))
        parts.append("<h3>Confusion matrix</h3>" + _img("confusion matrix", confusion_picture(q)))
    parts.append(
        "<h2>Confidence</h2>"
        + _img("confidence histogram", confidence_picture(prediction.confidence, p.confidence_threshold))
    )
    parts.append("<h2>Predicted labels</h2>" + _img("predicted-label composition", composition_picture(result)))
    picture, note = scatter_section(plan, x, prediction, p.label_key)
    parts.append(f"<h2>The query coloured by prediction</h2><p class='small'>{e(note)}</p>"
                 + _img("scatter coloured by prediction", picture))  # fmt: skip
    parts.append(f"<p class='small'>Details: {ANNOTATION_JSON}; predictions: {ANNOTATIONS}.</p></body></html>")
    return "\n".join(parts)
