"""The functions the DAG's tasks call: each takes and returns plain JSON-able values (task XComs).

The DAG file only wires these together. Nothing here imports helical or torch at import time (the
DAG processor imports this module); the model runs in the shard's own process, through a launcher.
A user error (bad input, unknown model, failed quality gate) fails the task at once: retrying cannot
fix it. A shard crash or a killed process is retried with backoff.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from . import annotate as annotate_job
from . import annotate_finetuned, compare, modality, objstore, settings, watcher
from .bounded import die_with_parent
from .dag_params import COMPARE_SHARED, MODEL_OPTIONS_PARAM, RUN_PARAM_NAMES, SEQUENCE_PARAMS  # the DAG's Param names
from .errors import ConfigError, HelicalAirflowError
from .launchers import launch
from .launchers import predict as predict_job
from .models import get_model, registry
from .pipeline import publish as publish_run
from .plan import load_plan, make_plan, task_groups
from .quality import check_label_key, require_passed
from .quality import quality_gate as assess
from .spec import InputSummary, Plan, RunParams
from .store import merge as merge_shards
from .validate import validate_input as validate

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])


def fail_fast_on_user_errors[F: Callable[..., Any]](func: F) -> F:
    """Turn errors a retry cannot fix into AirflowFailException (no retries), with the code and the fix."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        # Airflow runs a task in its own process group, forked by its supervisor: when a killed worker takes the
        # supervisor down, the task (and, through its own death signal, the shard it launched) must not run on
        die_with_parent()
        try:
            return func(*args, **kwargs)
        except HelicalAirflowError as exc:
            if getattr(exc, "retryable", exc.code.startswith("E3")):
                raise
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(exc.render()) from exc

    return wrapper  # type: ignore[return-value]


def resolve_input(input_path: str) -> Path:
    """The input file, which must be inside the data folder (relative paths are relative to it)."""
    root = settings.data_dir()
    path = Path(input_path)
    candidate = path if path.is_absolute() else root / path
    try:
        resolved = candidate.resolve()  # symlinks followed: one leading out of the folder is refused too
    except (OSError, RuntimeError):  # a symlink loop: validation reports it (E101) without reading anything
        resolved = Path(os.path.normpath(candidate))
    if not resolved.is_relative_to(root):
        raise ConfigError(
            "E513",
            f"input {input_path!r} is outside the data folder {root}",
            f"copy the file into {root} and pass its path relative to that folder (e.g. sample.h5ad)",
        )
    return resolved


def run_params(params: dict[str, Any]) -> RunParams:
    """RunParams from the DAG's Params; the weights cache comes from the worker (HELICAL_AIRFLOW_CACHE_DIR)."""
    chosen = {name: params[name] for name in RUN_PARAM_NAMES if params.get(name) not in (None, "")}  # "": profile
    options = {str(k): str(v) for k, v in (params.get(MODEL_OPTIONS_PARAM) or {}).items()}
    family = registry.get_family(get_model(params["model"])) if params.get("model") else None
    for name in SEQUENCE_PARAMS:  # the sequence Params, where they are the model's options (its family declares them)
        if family is not None and family.option(name) is not None and params.get(name) not in (None, ""):
            options.setdefault(name, str(params[name]))
    return RunParams(**chosen, options=options, cache_dir=settings.cache_dir())


@fail_fast_on_user_errors
def validate_input(params: dict[str, Any]) -> dict[str, Any]:
    # an object storage URL (s3://BUCKET/KEY) is taken as it is: validation stages a verified copy on this worker
    # and records the URL (summary.source); an embed task on a worker without the copy stages it again (objstore.py)
    url = params["input_path"] if objstore.is_url(params["input_path"]) else None
    if url and params.get("launcher", "local") != "local":
        # the copy lives in the worker's object cache, which containers and pods do not mount, and they get no
        # storage credentials: refused here rather than failing in every container (docs/scale-out.md)
        raise ConfigError(
            "E908", f"the {params['launcher']} launcher cannot read an object storage input ({objstore.redact(url)})",
            "use launcher local for s3:// inputs, or copy the object into the data folder and pass its path",
        )  # fmt: skip
    check_output(params)
    path = url or resolve_input(params["input_path"])
    local = objstore.local_input(str(path))
    check_label_key(local, params.get("label_key") or None)  # before anything is embedded
    check_annotation(params)  # the optional annotate_* Params: nothing to check without them
    summary = validate(str(path), params["model"], params.get("layer"), settings.cache_dir(),
                       options=run_params(params).options, data_root=settings.data_dir())  # fmt: skip
    log.info("%s", modality.of(summary).describe(summary))
    return summary.model_dump()


def check_output(params: dict[str, Any]) -> str:
    """The run's output location (objstore.output_location: the `output` Param, else the worker's setting); an
    object storage output takes the local launcher only (E910: containers and pods neither mount the worker's work
    folder nor get the storage credentials) and no annotation (E911: the annotation steps read a local run folder)."""
    out, launcher = objstore.output_location(params.get("output")), params.get("launcher") or "local"
    if objstore.is_url(out) and launcher != "local":
        raise ConfigError(
            "E910", f"the {launcher} launcher cannot write to object storage ({out})",
            "use launcher local with an object storage output, or leave the output Param empty",
        )  # fmt: skip
    if objstore.is_url(out) and (params.get("annotate_reference") or params.get("annotate_classifier")):
        raise ConfigError(
            "E911", f"annotation is not done for runs written to object storage ({out})",
            "leave the output Param empty (the worker's output folder) to annotate, or run without annotate_*",
        )  # fmt: skip
    return out


def open_run(plan_path: str, merged: bool = False) -> tuple[Plan, str | None]:
    """A task's plan on this worker and the output URL: a local plan.json as it is (None), or the plan's URL made
    local here, with the run's state pulled from the store (objstore.open_plan)."""
    return objstore.open_plan(plan_path, merged) if objstore.is_url(plan_path) else (load_plan(plan_path), None)


@fail_fast_on_user_errors
def plan_shards(params: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """Write plan.json; returns where it is, the shard indices to map over and the queue to run them on. With an
    object storage output: in this worker's work folder, uploaded, and `plan_path` is its URL."""
    out = check_output(params)
    store = out if objstore.is_url(out) else None
    if store is None:
        plan = make_plan(InputSummary(**summary), run_params(params), settings.output_dir())
    else:  # validate may have run on another worker: its copy of an s3:// input is staged here when missing
        plan = make_plan(objstore.input_here(InputSummary(**summary)), run_params(params), objstore.work_root(store))
    groups = task_groups(len(plan.shards), settings.task_slots(), settings.max_shards_per_task())
    profile = get_model(plan.params.model).profile
    if plan.fixture:
        log.warning("FIXTURE weights (random tiny models): the embeddings carry no biology")
    log.info("run %s: %d shard(s) of up to %d %s -> %s", plan.run_key, len(plan.shards), plan.params.shard_size,
             plan.input.unit, plan.out_dir)  # fmt: skip
    return {
        "plan_path": str(plan.plan_file) if store is None else objstore.push_plan(store, plan.out_path),
        "run_key": plan.run_key,
        "out_dir": objstore.run_outputs(store, plan)["out_dir"],
        "groups": groups,  # one embed task each: a contiguous group of shards, one model load
        "queue": profile.queue,
        "pool": profile.pool,
    }


@fail_fast_on_user_errors
def launch_shards(plan_path: str, shards: list[int], launcher: str) -> list[dict[str, Any]]:
    """Embed a task's group of shards through the launcher the user picked (one model load); its output streams
    into the task log; the results come from the run folder."""
    if objstore.is_url(plan_path):  # on whichever worker: the plan and the store's shards pulled here, each shard
        plan, store = objstore.open_plan(plan_path)  # finished here pushed as soon as it is written
        with objstore.uploading_shards(store, plan, shards):
            results = launch(launcher, str(plan.plan_file), shards)
    else:
        results = launch(launcher, plan_path, shards)
        plan = load_plan(plan_path)
    unit = plan.input.unit
    for result in results:
        verb = "reused (already done)" if result.get("reused") else f"embedded in {result.get('seconds', 0):.1f}s"
        log.info("shard %d: %d %s %s on %s", result["index"], result.get("cells", 0), unit, verb, result.get("host"))
    return results


@fail_fast_on_user_errors
def merge(plan_path: str) -> dict[str, Any]:
    plan, store = open_run(plan_path)
    manifest = merge_shards(plan)
    if store is not None:  # embeddings.h5ad, then manifest.json (no quality yet: not a finished run for a rerun)
        objstore.push_outputs(store, plan.out_path, latest=False)
    log.info("merged %d %s from %d shards", manifest.total_cells, plan.input.unit, len(manifest.shards))
    # outputs first: it has a "shards" entry of its own (the shard file pattern), which must not hide the count
    return {**manifest.outputs, "total_cells": manifest.total_cells, "shards": len(manifest.shards)}


@fail_fast_on_user_errors
def quality_gate(plan_path: str, label_key: str | None = None) -> dict[str, Any]:
    """Collapse checks and, with a label column (the `label_key` Param, else a guess), scores vs PCA."""
    plan, store = open_run(plan_path, merged=True)
    report = assess(plan, label_key or None)
    log.info("quality gate %s: %s", "passed" if report.passed else "FAILED", report.model_dump())
    if store is not None:  # the manifest with the gate's result, passed or not
        objstore.push_outputs(store, plan.out_path, latest=False)
    require_passed(report)
    return report.model_dump()


@fail_fast_on_user_errors
def publish(plan_path: str) -> dict[str, Any]:
    """report.html (+ MLflow when configured), then point `<dataset>/latest` at this run (pipeline.publish). With
    an object storage output: the outputs uploaded (manifest last, latest.json after a passed gate), then this
    worker's work copy of the run removed (a rerun or a resume reads the store, open_plan)."""
    plan, store = open_run(plan_path, merged=True)
    manifest = publish_run(plan)
    if store is not None:
        passed = manifest.quality is None or manifest.quality.passed
        objstore.push_outputs(store, plan.out_path, latest=passed)
        if passed:
            objstore.clear_work(plan.out_path)
    outputs = {"run_key": plan.run_key, **objstore.run_outputs(store, plan), "fixture": manifest.fixture}
    log.info("published: %s", outputs)
    return outputs


def claim_incoming(incoming: str = "incoming", min_age_s: float = 5.0, wait_s: float = 120.0) -> list[str]:
    """Move each finished input (any modality's: watcher.is_input) out of data/<incoming>/ into <incoming>/accepted/;
    return their data paths.

    A file still being copied is left until its size stops changing (writers can also copy to a
    `.part` name and rename, which is atomic). Moving it first means it is picked up exactly once.
    """
    root = settings.data_dir()
    folder = root / incoming
    accepted = folder / "accepted"
    deadline = time.monotonic() + wait_s
    claimed: list[str] = []
    while True:
        pending = [p for p in sorted(folder.glob("*")) if p.is_file() and watcher.is_input(p)]
        stable = [p for p in pending if time.time() - p.stat().st_mtime >= min_age_s]
        for path in stable:
            accepted.mkdir(parents=True, exist_ok=True)
            target = accepted / path.name
            if target.exists():
                target = accepted / f"{path.stem}.{time.strftime('%Y%m%dT%H%M%S')}{path.suffix}"
            shutil.move(str(path), target)
            claimed.append(str(target.relative_to(root)))
            log.info("claimed %s -> %s", path, target)
        if claimed or not pending or time.monotonic() > deadline:
            return claimed
        time.sleep(min_age_s)


# ---- the comparison DAG (compare.py: plan -> one workflow run per model -> score) -------------------------------


@fail_fast_on_user_errors
def plan_comparison(params: dict[str, Any]) -> dict[str, Any]:
    """Check the models (E201, E1001, E1004) and columns (E1002, E1003), plan each model's run the way the workflow
    will (same RunParams, so the same run keys), write comparison_plan.json; returns its path and one workflow conf
    per model."""
    path = resolve_input(params["input_path"])
    cparams = compare.CompareParams(models=list(params["models"]), label_key=params.get("label_key") or None,
                                    batch_key=params.get("batch_key") or None,
                                    max_cells=params.get("max_cells") or compare.MAX_CELLS,
                                    seed=params.get("seed") or 0)  # fmt: skip
    shared = {name: params[name] for name in COMPARE_SHARED if params.get(name) not in (None, "")}

    def conf(model: str, label_key: str | None = None) -> dict[str, Any]:
        return {**shared, "model": model, **({"label_key": label_key} if label_key else {})}

    cplan = compare.plan_comparison(path, cparams, lambda m: run_params(conf(m)), settings.output_dir())
    log.info("comparison %s of %s: runs %s -> %s", cplan.comparison_key, cplan.dataset,
             {r.model: r.run_key for r in cplan.runs}, cplan.out_dir)  # fmt: skip
    return {
        "plan_path": str(cplan.out_path / compare.COMPARISON_PLAN),
        "comparison_key": cplan.comparison_key,
        "out_dir": cplan.out_dir,
        # helical_model_workflow's conf per model: its run lands in the run folder planned here (same run key)
        "confs": [conf(run.model, cplan.label_key) for run in cplan.runs],
    }


@fail_fast_on_user_errors
def score_comparison(plan_path: str) -> dict[str, Any]:
    """Score every model's finished run and the PCA baseline (compare.score): comparison.json and .html, MLflow when
    configured, the scores to StatsD."""
    result = compare.score(compare.load_comparison_plan(plan_path))
    for line in result.warnings:
        log.warning("compare: %s", line)
    log.info("ranked: %s", [(row.rank, row.name, row.total) for row in result.rows])
    return {"comparison_key": result.comparison_key, "out_dir": result.out_dir, "fixture": result.fixture,
            "ranked": [row.name for row in result.rows]}  # fmt: skip


# ---- annotation in the workflow (optional: the annotate_* Params; without them these steps skip) -----------------
#
#   validate_input -> ... -> publish -> plan_annotation -> predict_shards (mapped, fine-tuned model only) -> annotate
#
# - a reference (`annotate_reference`, labelled in `label_key`): annotate.annotate embeds the reference in the
#   task (reused by its run key like any run), reuses the query's published run, fits the classifier (kNN) and
#   writes annotations.h5ad, annotation.json and annotation.html in the query's run folder;
# - a fine-tuned model (`annotate_classifier`: models:/NAME@ALIAS, models:/NAME/VERSION or a model folder under the
#   output folder): predict_shards predicts each group of the query's shards through the run's launcher (the
#   `predict` job: `helical-airflow predict-shard` in a process, container or pod of its own, one model load a
#   group, each shard saved atomically: a retry redoes only the missing ones), on the queue and pool of the model's
#   profile like the embed task; annotate merges them into the same three files.


def annotation_mode(params: dict[str, Any]) -> str:
    """none, reference or classifier; E705: both given."""
    reference, classifier = params.get("annotate_reference") or None, params.get("annotate_classifier") or None
    if reference and classifier:
        annotate_finetuned.check_sources(reference, classifier)  # E705
    return "reference" if reference else "classifier" if classifier else "none"


def classifier_source(params: dict[str, Any]) -> str:
    """models:/... as it is; a folder relative to (and inside) the output folder (E822)."""
    text = str(params["annotate_classifier"]).strip()
    if text.startswith("models:/"):
        return text
    root = settings.output_dir().resolve()
    path = Path(text)
    resolved = (path if path.is_absolute() else root / path).resolve()
    if not resolved.is_relative_to(root):
        raise ConfigError("E822", f"annotate_classifier {text!r} is outside the output folder {root}",
                          "pass models:/NAME@ALIAS, or the model folder's path relative to the output folder "
                          "(<dataset>/finetune/<label>/<finetune_key>)")  # fmt: skip
    return str(resolved)


def check_annotation(params: dict[str, Any]) -> None:
    """Before anything is embedded: the reference inside the data folder with a label column named, or a
    fine-tuned model that exists (E804, E806) and was fine-tuned from the run's model (E830)."""
    mode = annotation_mode(params)
    if mode == "reference":
        resolve_input(params["annotate_reference"])
        if not params.get("label_key"):
            raise ConfigError("E823", "annotate_reference needs the label column to learn: label_key is empty",
                              "set label_key to the reference's obs column of labels (e.g. cell_type)")  # fmt: skip
    elif mode == "classifier":
        resolved = annotate_finetuned.resolve(classifier_source(params))
        annotate_finetuned.check_model(resolved.result, params["model"], resolved.source)


@fail_fast_on_user_errors
def plan_annotation(params: dict[str, Any], plan_path: str) -> list[dict[str, Any]]:
    """The groups of the query's shards predict_shards maps over: none unless a fine-tuned model annotates."""
    if annotation_mode(params) != "classifier":
        return []
    plan = load_plan(plan_path)
    # models:/NAME@ALIAS -> models:/NAME/VERSION once, here (resolve pins it): every predict task and the merge use
    # that version even if another training moves the alias during this run
    resolved = annotate_finetuned.resolve(classifier_source(params))
    source = resolved.pinned or resolved.source
    annotate_finetuned.check_model(resolved.result, plan.params.model, source)
    annotate_finetuned.check_plan(resolved.result, plan, source)  # E831 weights, E832 vocabulary
    groups = task_groups(len(plan.shards), settings.task_slots(), settings.max_shards_per_task())
    return [{"plan_path": plan_path, "shards": group, "classifier": source} for group in groups]


@fail_fast_on_user_errors
def predict_shards(
    params: dict[str, Any], plan_path: str, shards: list[int], classifier: str | None = None
) -> list[dict[str, Any]]:
    """Predict a group of the query's shards with the fine-tuned model through the launcher the user picked (the
    `predict` job: one process, container or pod, one model load for the group); `classifier` is the source
    plan_annotation pinned (the Param's, when not given). Its output streams into the task log; the results come
    from the run folder (E512: the process exited 0 without one, retried)."""
    launcher = params.get("launcher") or "local"
    resolved = annotate_finetuned.resolve(classifier or classifier_source(params))
    job = predict_job(annotate_finetuned.job_source(resolved, launcher), resolved.result.finetune_key)
    done = launch(launcher, plan_path, shards, job=job)
    for result in done:
        log.info("shard %d: %s %s", result["index"], "reused" if result["reused"] else "predicted", result["path"])
    return [{"index": r["index"], "path": r["path"], "reused": r["reused"]} for r in done]


@fail_fast_on_user_errors
def annotate_query(
    params: dict[str, Any], plan_path: str, groups: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """annotations.h5ad, annotation.json and annotation.html in the query's run folder; `groups` are
    plan_annotation's (their pinned classifier is the one the predictions were made with)."""
    mode = annotation_mode(params)
    if mode == "none":
        from airflow.sdk.exceptions import AirflowSkipException

        raise AirflowSkipException("no annotate_reference or annotate_classifier Param: nothing to annotate")
    plan = load_plan(plan_path)
    threshold = params.get("annotate_confidence_threshold")
    threshold = 0.5 if threshold in (None, "") else float(threshold)
    if mode == "classifier":
        pinned = next((g["classifier"] for g in groups or [] if g.get("classifier")), None)
        resolved = annotate_finetuned.resolve(pinned or classifier_source(params))
        chosen = annotate_finetuned.annotate_params(resolved.result, params.get("label_key") or None, threshold,
                                                    plan.params.seed)  # fmt: skip
        result = annotate_finetuned.merge_predictions(plan, resolved, chosen)
    else:
        reference = resolve_input(params["annotate_reference"])
        chosen = annotate_job.AnnotateParams(label_key=params["label_key"], confidence_threshold=threshold,
                                             seed=plan.params.seed)  # fmt: skip
        result = annotate_job.annotate(plan.input.path, reference, run_params(params), chosen, settings.output_dir())
    folder = Path(plan.out_dir)
    outputs = {
        "mode": mode,
        "annotation_key": result.annotation_key,
        "annotations": str(folder / annotate_job.ANNOTATIONS),
        "annotation": str(folder / annotate_job.ANNOTATION_JSON),
        "report": str(folder / annotate_job.ANNOTATION_HTML),
        "predicted_counts": result.predicted_counts,
    }
    log.info("annotated: %s", outputs)
    return outputs
