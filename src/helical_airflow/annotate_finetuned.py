"""Annotation with a fine-tuned model: `annotate QUERY --classifier FOLDER|models:/NAME@ALIAS|models:/NAME/VERSION`.

    the model folder (or the registry's copy, downloaded) --checks: same base model (E830), same base weights
    (E831), same gene vocabulary (E832)--> the query's embedding run (pipeline: validate -> plan -> embed shards
    -> merge -> gate -> report, reused by its run key; its embeddings draw the report's UMAP) --> the `predict`
    job through a launcher (`helical-airflow predict-shard --plan P --classifier SOURCE --shard I ...`, which
    calls predict_shards: one model load for the group, probabilities to predictions/<finetune_key>/<shard>.npy,
    atomic: a killed annotation redoes only the missing shards) --> merge_predictions: annotations.h5ad,
    annotation.json, annotation.html, the same files and columns as the reference path (annotate.py)

Predictions run like embeddings: in a process, container or pod of their own (launchers/jobs.py), under the
plan's memory cap, on a leased GPU, recycled past the runner's memory bound. The CLI launches one group of
every shard (default: the local launcher); the DAG maps its predict task over the plan's task groups on the
model's queue and pool, and calls merge_predictions after them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import annotate, finetune, finetune_registry, modality, pipeline, scores
from .annotate import AnnotateParams, AnnotationResult, FineTunedRef, Prediction
from .embed import Recycle, resolve_device, use_cache_dir
from .errors import ConfigError
from .finetune_spec import FineTuneResult
from .launchers import launch
from .launchers import predict as predict_job
from .launchers.jobs import PREDICTIONS, finished_prediction, prediction_file
from .models import get_model, registry
from .models import runner as model_runner
from .models.cache import models_dir
from .spec import Plan, RunParams, ShardResult
from .store import embeddings_key, save_npy

log = logging.getLogger(__name__)


class Resolved(NamedTuple):
    """A fine-tuned model's folder on this machine and its finetune.json (the model itself not loaded)."""

    source: str  # as given (recorded in annotation.json)
    folder: Path
    result: FineTuneResult
    pinned: str | None = None  # a registry source's models:/NAME/VERSION: the version downloaded into `folder`


def is_model_source(classifier: str) -> bool:
    """True when --classifier names a fine-tuned model (a folder or models:/...), not knn or logreg."""
    return classifier not in ("knn", "logreg")


def check_sources(reference: str | Path | None, classifier: str) -> None:
    """Exactly one source of labels: a reference (with knn/logreg) or a fine-tuned model (E705, E706)."""
    if is_model_source(classifier) and reference is not None:
        raise ConfigError(
            "E705", f"--classifier {classifier} (a fine-tuned model) and --reference {reference} were both given; "
            "the fine-tuned model already knows its classes, a reference would train another classifier",
            "drop --reference to predict with the fine-tuned model, or pass --classifier knn|logreg to classify "
            "from the reference",
        )  # fmt: skip
    if not is_model_source(classifier) and reference is None:
        raise ConfigError(
            "E706", f"nothing to learn the labels from: --classifier {classifier} needs --reference",
            "pass --reference REF.h5ad (labelled in --label-key), or --classifier with a fine-tuned model folder "
            "or models:/NAME@ALIAS",
        )  # fmt: skip


def resolve(source: str | Path, tracking_uri: str | None = None) -> Resolved:
    """The folder behind `source` (E804: no such registered model, alias or version; E806: not a model folder).

    A registry URI is pinned first (models:/NAME@ALIAS -> models:/NAME/VERSION, the version the alias names now)
    and that version downloaded: a container's predict job is told `pinned`, so it loads the version downloaded
    and recorded here even if another training moves the alias meanwhile."""
    text = str(source)
    pinned = finetune_registry.pin(text, tracking_uri) if text.startswith("models:/") else None
    folder = finetune_registry.download(pinned, tracking_uri) if pinned else Path(text)
    if not (folder / finetune.RESULT_FILE).is_file() or not (folder / finetune.MODEL_FILE).is_file():
        raise ConfigError("E806", f"{folder} is not a fine-tuned model folder (no {finetune.RESULT_FILE} and "
                          f"{finetune.MODEL_FILE})", "pass the folder `helical-airflow finetune` printed, or "
                          "models:/NAME@ALIAS")  # fmt: skip
    result = FineTuneResult.model_validate_json((folder / finetune.RESULT_FILE).read_text())
    return Resolved(text, folder.resolve(), result, pinned)


def check_model(result: FineTuneResult, model: str, source: str) -> None:
    """The run's --model must be the one the classifier was fine-tuned from (E830)."""
    if model != result.model:
        family = get_model(model).family
        raise ConfigError(
            "E830", f"{source} was fine-tuned from {result.model!r} ({result.family} family) but the run asks for "
            f"{model!r} ({family} family): its head reads {result.family}'s cell embeddings only",
            f"pass --model {result.model} (or leave --model out), or fine-tune {model} on your labels",
        )  # fmt: skip


def check_plan(result: FineTuneResult, plan: Plan, source: str) -> None:
    """The query's plan must load the base weights (E831) and the gene vocabulary (E832) the model was trained on."""
    if plan.weights_checksum != result.weights_checksum:
        raise ConfigError(
            "E831", f"the query run loads {plan.params.model!r} weights {plan.weights_checksum[:12] or 'none'} "
            f"(cache {plan.params.cache_dir or 'default'}, options {plan.params.options or 'default'}) but {source} "
            f"was fine-tuned from weights {result.weights_checksum[:12]}",
            "pass the --cache-dir and --option values the model was fine-tuned with (fixture or real weights; "
            "finetune.json records them)",
        )  # fmt: skip
    if result.vocabulary_sha256 is None:
        return  # a folder written before the vocabulary was recorded: the weights checksum covers its files
    found = vocabulary_sha256(plan)
    if found != result.vocabulary_sha256:
        raise ConfigError(
            "E832", f"the query run maps genes through another vocabulary ({found[:12]}) than {source} was trained "
            f"on ({result.vocabulary_sha256[:12]}): its tokens would mean other genes",
            "run with the --option values and cache the model was fine-tuned with, or fine-tune again on this "
            "vocabulary",
        )  # fmt: skip


def vocabulary_sha256(plan: Plan) -> str:
    spec = get_model(plan.params.model)
    use_cache_dir(plan.params.cache_dir)
    prefix = model_runner.helical_prefix()
    vocab = registry.get_family(spec).vocabulary(spec, plan.params.options, models_dir(prefix))
    return finetune.vocabulary_sha256(vocab)


def load(resolved: Resolved, plan: Plan) -> finetune.Classifier:
    """The fine-tuned model, loaded once, on the plan's device, from the plan's weights cache."""
    device = resolve_device(plan.params.device, get_model(plan.params.model).profile.gpu, plan.fixture)
    return finetune.load_classifier(resolved.folder, cache_dir=plan.params.cache_dir, device=device)


def predictions_dir(plan: Plan, finetune_key: str) -> Path:
    return plan.out_path / PREDICTIONS / finetune_key


def predict_shard(plan: Plan, index: int, classifier: finetune.Classifier) -> tuple[Path, bool]:
    """Shard `index` of the query's plan through the fine-tuned model: its class probabilities (NaN rows: cells
    that express no gene of the vocabulary) in predictions/<finetune_key>/<index>.npy. Returns the file and
    whether it was reused (a finished shard is not predicted again)."""
    if not 0 <= index < len(plan.shards):
        raise ConfigError("E208", f"shard {index} is not in this plan (0..{len(plan.shards) - 1})", "check --shard")
    target = prediction_file(plan, classifier.result.finetune_key, index)
    shard = plan.shards[index]
    if target.is_file() and np.load(target, mmap_mode="r").shape == (shard.cells, len(classifier.labels)):
        return target, True
    rows = modality.of(plan.input).read_shard(plan.input, shard.start, shard.stop, plan.params.layer)
    probabilities = np.asarray(classifier.predict_proba(rows), dtype=np.float32)
    target.parent.mkdir(parents=True, exist_ok=True)
    save_npy(target, probabilities)
    log.info("shard %d: %d cells predicted by fine-tuned model %s", index, shard.cells, classifier.result.finetune_key)
    return target, False


def predict_shards(
    plan: Plan, resolved: Resolved, indices: list[int], recycle: Recycle = Recycle()
) -> tuple[list[tuple[Path, bool]], list[int]]:
    """What `helical-airflow predict-shard` does: predict these shards, loading the model once and only if one of
    them needs it (finished shards are reused). Like embed_shards, stops after a shard when `recycle` says so and
    returns the indices left for a fresh process. Returns ((file, reused) per shard done, left)."""
    done: list[tuple[Path, bool]] = []
    classifier: finetune.Classifier | None = None
    predicted = 0
    for position, index in enumerate(indices):
        finished = finished_prediction(plan, resolved.result.finetune_key, index)
        if classifier is None and finished is None:
            classifier = load(resolved, plan)
        if classifier is None:  # finished and no model loaded yet: nothing to load it for
            done.append((prediction_file(plan, resolved.result.finetune_key, index), True))
            continue
        path, reused = predict_shard(plan, index, classifier)
        done.append((path, reused))
        if reused:
            continue
        predicted += 1
        over, rss_mb = recycle.due(predicted)  # a reused shard made no garbage to collect and no reason to stop
        left = list(indices[position + 1 :])
        if left and over:
            log.info("recycling the predict process after %d shard(s) (RSS %.0f MB; %d shard(s) left)", predicted,
                     rss_mb, len(left))  # fmt: skip
            return done, left
    return done, []


def job_source(resolved: Resolved, launcher: str) -> str:
    """What the launched predict process is told to load: the folder itself where it shares this machine's files
    (local launcher; a registry copy is then downloaded once), the pinned models:/NAME/VERSION (`resolve`) for a
    container or pod (it downloads its own copy; MLFLOW_TRACKING_URI is passed on), a folder under the output
    folder as it is."""
    if launcher != "local" and resolved.pinned:
        return resolved.pinned
    return str(resolved.folder)


def annotation_key(plan: Plan, result: FineTuneResult, params: AnnotateParams) -> str:
    blob = json.dumps({"query": plan.run_key, "finetune_key": result.finetune_key, "params": params.model_dump(),
                       "version": annotate.ANNOTATE_VERSION}, sort_keys=True)  # fmt: skip
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def annotate_params(result: FineTuneResult, label_key: str | None, confidence_threshold: float,
                    seed: int = 0) -> AnnotateParams:  # fmt: skip
    """The recorded parameters: the query's column to score (default: the column the model learnt)."""
    return AnnotateParams(label_key=label_key or result.label_key, classifier="finetuned",
                          confidence_threshold=confidence_threshold, seed=seed)  # fmt: skip


def merge_predictions(plan: Plan, resolved: Resolved, params: AnnotateParams,
                      shards_embedded: int = 0) -> AnnotationResult:  # fmt: skip
    """Every shard's probabilities -> annotations.h5ad, annotation.json, annotation.html in the query's run folder
    (the reference path's files and columns). Needs the query's embeddings.h5ad (the UMAP) and every shard
    predicted (E707 names the missing ones)."""
    import sklearn

    result = resolved.result
    folder = predictions_dir(plan, result.finetune_key)
    files = [folder / f"{i:05d}.npy" for i in range(len(plan.shards))]
    missing = [i for i, f in enumerate(files) if not f.is_file()]
    if missing:
        raise ConfigError("E707", f"shard(s) {missing[:20]} of run {plan.run_key} have no predictions in {folder}",
                          "predict every shard first (annotate_finetuned.predict_shard), then merge")  # fmt: skip
    probabilities = np.concatenate([np.load(f) for f in files]) if files else np.zeros((0, len(result.labels)))
    no_gene = np.isnan(probabilities).any(axis=1)
    probabilities[no_gene] = 0.0
    classes = list(result.labels)
    winner = probabilities.argmax(axis=1)
    confidence = probabilities[np.arange(len(probabilities)), winner]
    best = np.asarray(classes, dtype=object)[winner]
    best[no_gene] = annotate.UNKNOWN
    predicted = np.where(confidence >= params.confidence_threshold, best, annotate.UNKNOWN).astype(object)
    predicted[no_gene] = annotate.UNKNOWN  # a threshold of 0 must not call a cell the model never saw
    prediction = Prediction(classes=classes, probabilities=probabilities, best=best, confidence=confidence,
                            predicted=predicted)  # fmt: skip
    query_obs, query_x = annotate.embedded(plan)
    query_scores = None
    if params.label_key in query_obs.columns and any(
        v is not None for v in annotate.label_values(query_obs, params.label_key)
    ):
        query_scores = annotate.score_query(annotate.label_values(query_obs, params.label_key), prediction)
    warnings = annotate.labels_missing_warning(query_scores, params.label_key, "the fine-tuned model")
    if no_gene.any():
        warnings.append(f"{int(no_gene.sum())} query cells express no gene of the model's vocabulary: predicted "
                        f"{annotate.UNKNOWN!r}")  # fmt: skip
    for line in warnings:
        log.warning("annotate: %s", line)
    key = annotation_key(plan, result, params)
    made = AnnotationResult(
        annotation_key=key,
        annotate_version=annotate.ANNOTATE_VERSION,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        params=params,
        model=plan.params.model,
        model_family=plan.model_family,
        fixture=plan.fixture,
        weights_checksum=plan.weights_checksum,
        embeddings=embeddings_key(plan),
        classifier=f"fine-tuned {result.family} ({result.head} head, finetune key {result.finetune_key})",
        hyperparameters=dict(sorted(result.params.items())),
        sklearn_version=sklearn.__version__,
        reference=None,
        query=annotate.RunRef(
            input=plan.input.path,
            dataset=plan.dataset,
            run_key=plan.run_key,
            run_dir=plan.out_dir,
            cells=len(query_obs),
            vocab_overlap=round(plan.input.vocab_overlap, 4),
            shards_embedded=shards_embedded,
            shards_reused=len(plan.shards) - shards_embedded,
        ),  # fmt: skip
        classes=classes,
        reference_class_counts=dict(sorted(result.split.train_per_class.items())),
        reference_unlabelled_cells=result.split.unlabelled_cells,
        reference_cv=None,
        predicted_counts=dict(sorted(Counter(predicted.tolist()).items())),
        query_scores=query_scores,
        warnings=warnings,
        outputs={
            "annotations": annotate.ANNOTATIONS,
            "annotation": annotate.ANNOTATION_JSON,
            "report": annotate.ANNOTATION_HTML,
        },  # fmt: skip
        finetuned=FineTunedRef(
            source=resolved.source,
            folder=str(resolved.folder),
            finetune_key=result.finetune_key,
            model=result.model,
            family=result.family,
            label_key=result.label_key,
            trained_on=result.input_path,
            trained_on_run_key=result.input_run_key,
            val_accuracy=round(result.best.val_accuracy, 4),
            val_macro_f1=round(result.best.val_macro_f1, 4),
            val_cells=result.split.val_cells,
        ),  # fmt: skip
        cells_without_known_gene=int(no_gene.sum()),
    )
    annotate.write_outputs(plan, annotate.Classified(made, query_obs, query_x, prediction))
    return made


def annotate_with_classifier(
    query: str | Path,
    source: str | Path | Resolved,
    run_params: RunParams,
    out_root: Path,
    label_key: str | None = None,
    confidence_threshold: float = 0.5,
    tracking_uri: str | None = None,
    on_plan: Callable[[str, Plan], None] | None = None,
    on_shard: Callable[[Plan, ShardResult], None] | None = None,
    launcher: str = "local",
) -> AnnotationResult:
    """Predict QUERY with a fine-tuned model (a folder or models:/...): checks first (nothing is embedded for a
    model that cannot read this run), then the query's embedding run, then every shard through the launcher (one
    process, container or pod for the group, one model load), then the outputs."""
    resolved = source if isinstance(source, Resolved) else resolve(source, tracking_uri)
    check_model(resolved.result, run_params.model, resolved.source)
    plan = pipeline.prepare(query, run_params, out_root)
    check_plan(resolved.result, plan, resolved.source)
    params = annotate_params(resolved.result, label_key, confidence_threshold, run_params.seed)
    if on_plan:
        on_plan("query", plan)
    table = annotate.obs_table(plan)
    gate_key = None if scores.usable_label_problem(table, params.label_key) else params.label_key
    tally: Counter[bool] = Counter()

    def counted(p: Plan, shard: ShardResult) -> None:
        tally[shard.reused] += 1
        if on_shard:
            on_shard(p, shard)

    pipeline.run_plan(plan, counted, label_key=gate_key, tracking_uri=tracking_uri)
    key = annotation_key(plan, resolved.result, params)
    existing = annotate.current_annotation(plan, key)
    if existing is not None and not tally[False]:
        log.info("annotation %s is current in %s", key, plan.out_dir)
        return existing
    job = predict_job(job_source(resolved, launcher), resolved.result.finetune_key)
    done = launch(launcher, str(plan.plan_file), list(range(len(plan.shards))), job=job)
    predicted = sum(not r["reused"] for r in done)
    log.info("fine-tuned model %s: %d shards predicted, %d reused (%s launcher)", resolved.result.finetune_key,
             predicted, len(plan.shards) - predicted, launcher)  # fmt: skip
    return merge_predictions(plan, resolved, params, shards_embedded=tally[False])
