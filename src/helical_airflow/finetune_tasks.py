"""The functions the fine-tuning DAG's tasks call (airflow/dags/helical_finetune.py): plain JSON-able values in and
out, the same steps `helical-airflow finetune` runs (finetune.py), split into Airflow tasks:

    validate -> plan -> tokenise (one mapped task per shard) -> train (the model's queue and pool; resumes from its
    last finished epoch on retry) -> evaluate -> register (MLflow Model Registry; the DAG emits an asset event)

- validate: the input file inside the data folder, the model's family has a `*FineTuningModel` (E807), the
  embedding pipeline's validation, the label column (labels.py: E701-E703), before anything is written.
- plan: the embedding plan of the same input and model (its run key is the model folder's `input_run_key`), the
  finetune key and the model folder; the shards the tokenise task maps over.
- tokenise: `finetune.tokenise_shard`: one shard's cells of the (seeded, stratified) split tokenised by helical's
  `process_data` into the training's own token folders (`<model root>/.work-<key>/tokens/{train,val}/<shard>/`,
  each written to a temp folder and renamed), which the training then finds done and reads memory-mapped.
- train: `finetune.train_model` in the task's process (the Celery worker forks one per task, so a crash or an
  out-of-memory never takes the worker down): a checkpoint after every epoch, so a retry of a killed task resumes
  after the last finished epoch and ends with the weights an undisturbed run ends with; a retry that starts while
  the killed attempt's process still lives waits for the key's lock (finetune_registry.key_lock, logged every
  30 s), so two trainings never write one work folder. Every epoch's metrics go to StatsD (finetune._train calls
  telemetry.emit_epoch); a failed training counts in helical_finetune_failures_total.
- evaluate: the best epoch's validation scores against the majority-class rate of the validation split.
- register: `finetune_registry.register_folder`; a server that is down fails the task with E820, which Airflow
  retries (the folder is complete: nothing is trained again).

Nothing here imports helical or torch at import time (the DAG processor imports this module).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from . import finetune, finetune_registry, modality, settings, telemetry
from .airflow_tasks import fail_fast_on_user_errors, resolve_input
from .dag_params import FINETUNE_PARAM_NAMES
from .errors import ConfigError, HelicalAirflowError
from .finetune_spec import FineTuneParams, FineTuneResult
from .models import get_model
from .plan import load_plan
from .validate import validate_input as validate_file

log = logging.getLogger(__name__)


def finetune_params(params: dict[str, Any]) -> FineTuneParams:
    """FineTuneParams from the DAG's Params; the weights cache comes from the worker (HELICAL_AIRFLOW_CACHE_DIR)."""
    chosen = {name: params[name] for name in FINETUNE_PARAM_NAMES if params.get(name) not in (None, "")}
    try:
        return FineTuneParams(**chosen, cache_dir=settings.cache_dir())
    except ValidationError as exc:  # the trigger form checks the same bounds; a Param changed by hand may not
        wrong = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(
            "E821",
            f"fine-tuning parameters refused: {wrong}",
            "pass values inside the bounds the trigger form shows (docs/finetune.md)",
        ) from exc


@fail_fast_on_user_errors
def validate(params: dict[str, Any]) -> dict[str, Any]:
    """The input, the model's fine-tuning family and the label column, checked before anything is written."""
    path = resolve_input(params["input_path"])
    chosen = finetune_params(params)
    finetune.family_for(chosen.model)
    summary = validate_file(str(path), chosen.model, None, settings.cache_dir(), data_root=settings.data_dir())
    labels = finetune.check_labels(modality.of(summary).metadata(summary), chosen.label_key)
    counts = labels.value_counts().to_dict()
    log.info("%s; %d labelled cells in %d classes of %r", modality.of(summary).describe(summary),
             int(labels.notna().sum()), len(counts), chosen.label_key)  # fmt: skip
    return {"input_path": str(path), "classes": {str(k): int(v) for k, v in counts.items()}}


@fail_fast_on_user_errors
def plan(params: dict[str, Any], validated: dict[str, Any]) -> dict[str, Any]:
    """The embedding plan of the input (plan.json, its run key), the finetune key and the model folder."""
    chosen = finetune_params(params)
    made = finetune.prepare_plan(validated["input_path"], chosen, settings.output_dir())
    key = finetune.finetune_key(made, chosen)
    root = finetune.model_root(settings.output_dir().resolve(), made.dataset, chosen.label_key)
    profile = get_model(chosen.model).profile
    if made.fixture:
        log.warning("FIXTURE weights (random tiny models): the fine-tuned model proves the pipeline, not the biology")
    log.info("fine-tuning %s on %r: key %s -> %s (%d shard(s) to tokenise)", chosen.model, chosen.label_key, key,
             root / key, len(made.shards))  # fmt: skip
    return {
        "plan_path": str(made.plan_file),
        "input_path": validated["input_path"],
        "finetune_key": key,
        "folder": str(root / key),
        "shards": [shard.index for shard in made.shards],
        "queue": profile.queue,
        "pool": profile.pool,
        "done": (root / key / finetune.RESULT_FILE).is_file(),
    }


@fail_fast_on_user_errors
def tokenise_shard(params: dict[str, Any], planned: dict[str, Any], shard: int) -> dict[str, Any]:
    """Tokenise one shard's cells of both splits into the training's token folders (kept when already there)."""
    if planned["done"]:
        return {"shard": shard, "skipped": "the model folder is finished"}
    tokens = finetune.tokenise_shard(load_plan(planned["plan_path"]), finetune_params(params), shard)
    done = {split: (tokens / split / f"{shard:05d}" / "rows.json").is_file() for split in ("train", "val")}
    log.info("shard %d tokenised into %s (training cells: %s, validation cells: %s)", shard, tokens,
             *("yes" if done[s] else "none in this shard" for s in ("train", "val")))  # fmt: skip
    return {"shard": shard, "tokens": str(tokens), **done}


@fail_fast_on_user_errors
def train(params: dict[str, Any], planned: dict[str, Any]) -> dict[str, Any]:
    """Train (resuming after the last finished epoch), writing the model folder; not registered yet."""
    chosen = finetune_params(params)
    dataset = load_plan(planned["plan_path"]).dataset
    try:
        # every epoch's metrics go to StatsD from the training itself (finetune._train -> telemetry.emit_epoch)
        folder, result = finetune.train_model(planned["input_path"], chosen, settings.output_dir())
    except HelicalAirflowError as exc:
        telemetry.emit_finetune_failure(exc.code, chosen.model, dataset, chosen.label_key)
        raise
    except Exception:
        telemetry.emit_finetune_failure("crash", chosen.model, dataset, chosen.label_key)
        raise
    best = result.best
    log.info("trained %s: best epoch %d of %d (validation accuracy %.3f, macro F1 %.3f)%s", folder,
             best.epoch, len(result.history), best.val_accuracy, best.val_macro_f1,
             " FIXTURE" if result.fixture else "")  # fmt: skip
    return {"folder": str(folder), "finetune_key": result.finetune_key, "epochs_run": len(result.history)}


def majority_rate(result: FineTuneResult) -> float:
    """The validation accuracy of always predicting the largest class of the training split."""
    largest = max(result.split.train_per_class, key=lambda k: result.split.train_per_class[k])
    return result.split.val_per_class.get(largest, 0) / max(result.split.val_cells, 1)


@fail_fast_on_user_errors
def evaluate(folder: str) -> dict[str, Any]:
    """The kept epoch's validation scores beside the majority-class rate (finetune.json holds them all)."""
    result = FineTuneResult.model_validate_json((Path(folder) / finetune.RESULT_FILE).read_text())
    best, majority = result.best, majority_rate(result)
    verdict = "above" if best.val_accuracy > majority else "NOT above"
    log.info("validation accuracy %.3f (%s the majority-class rate %.3f), macro F1 %.3f, best epoch %d of %d; "
             "per epoch: %s", best.val_accuracy, verdict, majority, best.val_macro_f1, best.epoch, len(result.history),
             [round(h.val_accuracy, 3) for h in result.history])  # fmt: skip
    return {
        "folder": folder,
        "val_accuracy": best.val_accuracy,
        "val_macro_f1": best.val_macro_f1,
        "majority_class_rate": majority,
        "best_epoch": best.epoch,
        "epochs_run": len(result.history),
        "fixture": result.fixture,
    }


@fail_fast_on_user_errors
def register(folder: str) -> dict[str, Any]:
    """Log and register the model folder in MLflow (once per server); E820 (retried) when the server is down."""
    path = Path(folder)
    result = FineTuneResult.model_validate_json((path / finetune.RESULT_FILE).read_text())
    record = finetune_registry.register_folder(path, result)
    if record is None:
        log.warning("no MLflow tracking URI configured (MLFLOW_TRACKING_URI): %s is not registered", path)
        return {"folder": folder, "status": "untracked"}
    if record.get("status") != "registered":
        uri, reason = record.get("uri"), record.get("error")
        error = ConfigError("E820", f"MLflow at {uri} did not register {path}: {reason}",
                            "the model folder is complete; start the tracking server (helical-airflow stack up) and "
                            "let the task retry, or clear it")  # fmt: skip
        error.retryable = True  # type: ignore[attr-defined]
        raise error
    log.info("registered %s", record)
    return {"folder": folder, **record}
