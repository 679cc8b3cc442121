"""A fine-tuned model in MLflow: one run (parameters, per-epoch metrics, the model folder as artifacts) and a new
version in the Model Registry under `helical-<family>-<label_key>`.

Alias policy: `champion` moves to the new version when its validation macro F1 is at least the current
champion's (tag `val_macro_f1` on each version), or when there is no champion yet; otherwise the new version is
registered without it. `load_classifier("models:/NAME@champion")` serves the champion.

Never loses a training: the model folder is complete before anything is sent. Registration is tried once, as
tracking.py does for runs (a /health probe first, no retries, short timeouts); its outcome goes to
`<folder>/registry.json` (`registered`, or `unregistered` with the error). Running the same `finetune` command
again with the server up registers the finished folder then (no training).

Idempotent on the server too: a registration that failed half-way (run created, artifacts logged, then the server
went away before the version or the alias) is completed, not repeated. Before creating anything it looks up the
model version tagged with this `finetune_key` (then the alias policy again) and the run tagged with it (a FINISHED
one is reused as it is; an unfinished one gets what it lacks), so one fine-tuning key is one run and one version.
Registrations of one key are serialised by the key's lock (`key_lock`, the one its training holds).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from . import settings, shardlock
from .errors import ConfigError
from .finetune_spec import FineTuneResult
from .store import write_json
from .tracking import HTTP_SETTINGS, configured_uri, probe

log = logging.getLogger(__name__)
ALIAS = "champion"
# the model folder's files (finetune.py writes them)
MODEL_FILE = "model.pt"  # helical's save_model
RESULT_FILE = "finetune.json"
SPLIT_FILE = "split.json"
REGISTRY_FILE = "registry.json"  # written after the folder is complete: the registration's record (or its error)
EXPERIMENT_SUFFIX = "-finetune"  # runs go to "<experiment>-finetune" (embedding runs stay in "<experiment>")


#: how often a process waiting for a fine-tuning key's lock says who holds it
LOCK_NOTE_EVERY_S = 30.0


def key_lock(root: Path, key: str) -> contextlib.AbstractContextManager[None]:
    """The lock of one fine-tuning key, `<model root>/.lock-<key>` (shardlock's flock: released by the kernel when
    its holder dies, however it dies), held while the key trains (finetune.train_model) and while it registers: a
    second training of the key (the CLI twice, a DAG retry while the first attempt's process lives) waits, logging
    who holds it every 30 s, then finds the finished folder and reuses it."""
    return shardlock.shard_lock(root / f".lock-{key}", waiting=f"fine-tuning key {key} is being trained or registered "
                                "by another process", note_every_s=LOCK_NOTE_EVERY_S)  # fmt: skip


def safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text) or "_"


def registered_name(family: str, label_key: str) -> str:

    return f"helical-{family}-{safe_name(label_key)}"


def _record(folder: Path) -> dict[str, Any] | None:

    path = folder / REGISTRY_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def register_folder(folder: Path, result: FineTuneResult, tracking_uri: str | None = None) -> dict[str, Any] | None:
    """Log and register a finished model folder once per server; returns the record (None: no tracking)."""

    uri = configured_uri(tracking_uri)
    if not uri:
        return None
    done = _record(folder)
    if done and done.get("status") == "registered" and done.get("uri") == uri:
        return done
    with key_lock(folder.parent, result.finetune_key):  # one registration of a key at a time
        done = _record(folder)
        if done and done.get("status") == "registered" and done.get("uri") == uri:
            return done  # registered by the process we waited for
        started = time.monotonic()
        try:
            probe(uri)
            for key, value in HTTP_SETTINGS.items():
                settings.export_default(key, value)
            record = _register(folder, result, uri)
        except Exception as exc:  # a finished training never fails because of its registration
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            log.warning("MLflow registration at %s failed after %.1f s (%s): the model folder %s is complete; run "
                        "the same finetune command again with the server up to register it",
                        uri, time.monotonic() - started, reason, folder)  # fmt: skip
            record = {"status": "unregistered", "uri": uri, "error": reason}
        write_json(folder / REGISTRY_FILE, record)
    return record


def _register(folder: Path, result: FineTuneResult, uri: str) -> dict[str, Any]:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    name = registered_name(result.family, result.label_key)
    version = _version_of_key(client, name, result.finetune_key)
    if version is None:
        experiment = settings.get().mlflow_experiment + EXPERIMENT_SUFFIX
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(experiment)
        run = _run_of_key(client, experiment_id, folder, result, name)
        try:
            client.create_registered_model(name, description=f"helical {result.family} fine-tuned on "
                                           f"{result.label_key}")  # fmt: skip
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        version = client.create_model_version(
            name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id,
            tags={"val_macro_f1": repr(result.best.val_macro_f1), "finetune_key": result.finetune_key,
                  "fixture": str(result.fixture).lower()},
        )  # fmt: skip
    else:
        log.info("fine-tuning key %s is %s version %s already (an earlier registration): completing it, not "
                 "registering it again", result.finetune_key, name, version.version)  # fmt: skip
    f1 = result.best.val_macro_f1
    champion = _champion_f1(client, name)
    promote = champion is None or f1 >= champion
    if promote:
        client.set_registered_model_alias(name, ALIAS, version.version)
    log.info("registered %s version %s in MLflow (%s)%s", name, version.version, uri,
             f"; alias {ALIAS}" if promote else f"; {ALIAS} stays (macro F1 {champion:.3f} > {f1:.3f})")  # fmt: skip
    return {"status": "registered", "uri": uri, "mlflow_run_id": version.run_id, "name": name,
            "version": str(version.version), "alias": ALIAS if promote else None,
            "model_uri": f"models:/{name}/{version.version}"}  # fmt: skip


def _version_of_key(client: Any, name: str, key: str) -> Any:
    """The model version of `name` tagged with fine-tuning key `key` (the oldest if there were ever two), or None."""
    found = client.search_model_versions(f"name = '{name}' and tags.finetune_key = '{key}'")
    return min(found, key=lambda v: int(v.version)) if found else None


def _run_of_key(client: Any, experiment_id: str, folder: Path, result: FineTuneResult, name: str) -> Any:
    """The run of this fine-tuning key, complete (params, metrics, the folder's files as artifacts, FINISHED): a
    FINISHED run tagged with the key is reused as it is, an unfinished one (a registration that stopped half-way)
    gets what it lacks, else a new one is made."""
    from mlflow.entities import Metric, Param, RunTag

    runs = client.search_runs([experiment_id], filter_string=f"tags.finetune_key = '{result.finetune_key}'",
                              order_by=["attributes.start_time ASC"])  # fmt: skip
    finished = [r for r in runs if r.info.status == "FINISHED"]
    if finished:
        return finished[0]
    if runs:
        run = runs[0]
        log.info("completing run %s of fine-tuning key %s (an earlier registration stopped half-way)",
                 run.info.run_id, result.finetune_key)  # fmt: skip
    else:
        tags = {"finetune_key": result.finetune_key, "dataset": result.dataset, "model": result.model,
                "label_key": result.label_key, "input_run_key": result.input_run_key,
                "fixture": str(result.fixture).lower(), "registered_model": name}  # fmt: skip
        run = client.create_run(experiment_id, run_name=f"finetune-{result.dataset}-{result.finetune_key}",
                                tags=tags)  # fmt: skip
    run_id = run.info.run_id
    if not run.data.params:  # log_batch is one transaction: all of it is there, or none
        now = int(time.time() * 1000)
        params = {f"param.{k}": str(v) for k, v in result.params.items()}
        params |= {"helical_model_name": result.helical_model_name, "weights_checksum": result.weights_checksum,
                   "input_sha256": result.input_sha256, "input_run_key": result.input_run_key,
                   "class_weighting": result.class_weighting, "n_classes": str(len(result.labels)),
                   "train_cells": str(result.split.train_cells), "val_cells": str(result.split.val_cells),
                   "best_epoch": str(result.best.epoch)}  # fmt: skip
        metrics = []
        for h in result.history:
            for field in ("train_loss", "val_loss", "val_accuracy", "val_macro_f1", "seconds",
                          "train_cells_per_second"):  # fmt: skip
                metrics.append(Metric(field if field != "seconds" else "epoch_seconds", float(getattr(h, field)), now,
                                      h.epoch))  # fmt: skip
        metrics += [Metric(f"best_{k}", float(getattr(result.best, k)), now, 0)
                    for k in ("val_loss", "val_accuracy", "val_macro_f1")]  # fmt: skip
        client.log_batch(run_id, metrics=metrics[:1000], params=[Param(k, v[:6000]) for k, v in params.items()],
                         tags=[RunTag("helical_airflow", "1")])  # fmt: skip
    for file in (MODEL_FILE, RESULT_FILE, SPLIT_FILE):  # the same paths again: an overwrite, not a second copy
        client.log_artifact(run_id, str(folder / file), artifact_path="model")
    client.set_terminated(run_id, "FINISHED")
    return client.get_run(run_id)


def _champion_f1(client: Any, name: str) -> float | None:
    from mlflow.exceptions import MlflowException

    try:
        current = client.get_model_version_by_alias(name, ALIAS)
    except MlflowException:
        return None
    try:
        return float(current.tags.get("val_macro_f1", "nan"))
    except ValueError:
        return None


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """`models:/NAME@ALIAS` -> (NAME, ALIAS, None); `models:/NAME/VERSION` -> (NAME, None, VERSION); a bare
    `models:/NAME` means the version to serve, `models:/NAME@champion`."""
    body = uri.removeprefix("models:/").strip("/")
    if "@" in body:
        name, alias = body.split("@", 1)
        return name, alias, None
    name, _, version = body.partition("/")
    return (name, None, version) if version else (name, ALIAS, None)


def pin(uri: str, tracking_uri: str | None = None) -> str:
    """`models:/NAME@ALIAS` -> `models:/NAME/VERSION`, the version the alias names now: a DAG run resolves it once
    and hands the version to its tasks, so an alias moved by another training during the run cannot mix versions."""
    _, found, _ = _version(uri, tracking_uri)
    return f"models:/{found.name}/{found.version}"


def download(uri: str, tracking_uri: str | None = None, dst: Path | None = None) -> Path:
    """The model folder behind a registry URI (E804: no such registered model, alias or version), downloaded once
    per server, name and version into the temp folder's `helical-airflow-registry/` (a version's files never
    change: every task of a run, and every later run, reuses the copy) or into `dst`."""
    client, found, server = _version(uri, tracking_uri)
    if dst is not None:
        return Path(client.download_artifacts(str(found.run_id), "model", str(dst)))
    server_id = hashlib.sha256(server.encode()).hexdigest()[:12]
    target = Path(tempfile.gettempdir()) / "helical-airflow-registry" / server_id / safe_name(found.name)
    copy = target / str(found.version)
    if (copy / "model" / RESULT_FILE).is_file():
        return copy / "model"
    target.mkdir(parents=True, exist_ok=True)
    part = Path(tempfile.mkdtemp(prefix=f".{found.version}-", dir=target))
    client.download_artifacts(str(found.run_id), "model", str(part))
    try:
        os.replace(part, copy)  # whole or not at all; another process may have put the same version there first
    except OSError:
        shutil.rmtree(part, ignore_errors=True)
    return copy / "model"


def _version(uri: str, tracking_uri: str | None) -> tuple[Any, Any, str]:
    """(client, the model version the URI names, the server), E804 when there is none."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    server = configured_uri(tracking_uri)
    if not server:
        raise ConfigError("E804", f"{uri} names a registered model but no MLflow server is configured",
                          "pass --tracking-uri (or set MLFLOW_TRACKING_URI)")  # fmt: skip
    name, alias, version = parse_model_uri(uri)
    for key, value in HTTP_SETTINGS.items():
        settings.export_default(key, value)
    client = MlflowClient(tracking_uri=server, registry_uri=server)
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise ConfigError(
                "E804",
                f"no registered model {name!r} in MLflow at {server}",
                "check the name (helical-<family>-<label key>; the finetune command prints it)",
            ) from None
        raise
    try:
        found = (client.get_model_version_by_alias(name, alias) if alias
                 else client.get_model_version(name, version or "1"))  # fmt: skip
    except MlflowException as exc:
        what = f"alias {alias!r}" if alias else f"version {version!r}"
        raise ConfigError("E804", f"registered model {name!r} has no {what} ({exc.error_code})",
                          f"use models:/{name}@{ALIAS} or an existing version number") from None  # fmt: skip
    return client, found, server
