"""The incoming-folder watcher's library code: claim dropped files with their parameters; park failures.

A file `<data>/incoming/<name>.h5ad` (or `incoming/<folder>/<name>.h5ad`), or any other input a modality reads
(`<name>.fa`, `.fa.gz`, `.csv`, `.parquet`, ...: modality.suffixes()), runs `helical_model_workflow` with:
1. the folder's defaults: `incoming/<folder>/params.json`, and a folder named like a model (`incoming/scgpt/`)
   picks that model;
2. over them, its sidecar `<name>.json` beside it (e.g. `{"layer": "counts", "shard_size": 500}`; `<name>` is the
   file name less its suffix: `reads.fa.gz` -> `reads.json`).
The merged parameters are validated by the workflow DAG's own Params (the same JSON schemas the trigger form
uses) before anything is triggered. A file that is claimed moves to `incoming/accepted/` (with its sidecar);
one whose parameters are invalid, or whose workflow run fails (`move_failed_input`, the workflow's failure
callback), moves to `incoming/failed/` with `<name>.error.txt` beside it saying why. Nothing is lost: move it
back into `incoming/` (fixed) to try again.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import modality, settings

log = logging.getLogger(__name__)
FOLDER_PARAMS = "params.json"
SKIP_FOLDERS = ("accepted", "failed")
ACCEPTED = "incoming/accepted/"


def workflow_params(dag_file: Path) -> dict[str, Any]:
    """The Param objects of the workflow DAG file (imported as a module; nothing is registered or run)."""
    spec = importlib.util.spec_from_file_location("_helical_workflow_params", dag_file)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.params)


def validate_conf(conf: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """conf checked by the DAG's Params exactly as a trigger is; returns the full resolved parameters."""
    from airflow.sdk.definitions.param import ParamsDict  # airflow: heavy, and only on the watcher's worker

    unknown = sorted(set(conf) - set(params))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown}; the workflow takes {sorted(params)}")
    resolved = ParamsDict({**params})
    resolved.update(conf)
    return resolved.validate()


def _unique(folder: Path, name: str) -> Path:
    target = folder / name
    if target.exists():
        stem, dot, suffix = name.partition(".")
        target = folder / f"{stem}.{time.strftime('%Y%m%dT%H%M%S')}{dot}{suffix}"
    return target


def _move(path: Path, folder: Path) -> Path:
    """Move the file (and its sidecar, if any) into folder; returns the file's new path."""
    folder.mkdir(parents=True, exist_ok=True)
    target = _unique(folder, path.name)
    shutil.move(str(path), target)
    if sidecar(path).is_file():
        shutil.move(str(sidecar(path)), sidecar(target))
    return target


def sidecar(path: Path) -> Path:
    """`<name>.json` beside the input: its parameters."""
    return path.with_name(modality.dataset_name(path) + ".json")


def write_error(target: Path, text: str) -> Path:
    error = target.with_name(modality.dataset_name(target) + ".error.txt")
    error.write_text(f"{datetime.now(UTC).isoformat(timespec='seconds')}\n{text.rstrip()}\n")
    return error


def params_for(path: Path, incoming: Path, models: list[str]) -> dict[str, Any]:
    """Folder defaults, then the sidecar; raises ValueError for a file that is not a JSON object."""
    conf: dict[str, Any] = {}
    if path.parent != incoming:
        if path.parent.name in models:
            conf["model"] = path.parent.name
        conf |= _json_object(path.parent / FOLDER_PARAMS)
    return conf | _json_object(sidecar(path))


def _json_object(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path.name} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path.name} must hold a JSON object of parameters, not {type(data).__name__}")
    return data


def is_input(path: Path) -> bool:
    """Whether a modality reads this file (a `.part` name being copied, a sidecar `.json`: no)."""
    return any(kind.accepts(path) for kind in modality.MODALITIES.values())


def pending(incoming: Path) -> list[Path]:
    """Every input file in incoming/ or one folder down, of any modality (not in accepted/ or failed/)."""
    files = [*incoming.glob("*"), *incoming.glob("*/*")]
    return sorted(p for p in files if p.is_file() and p.parent.name not in SKIP_FOLDERS and is_input(p))


def claim(dag_file: Path, incoming: str = "incoming", min_age_s: float = 5.0, wait_s: float = 120.0) -> list[dict]:
    """Claim each finished file in data/<incoming>/ with its validated parameters; returns the trigger confs.

    A file still being copied is left until its size stops changing (writers can also copy to a `.part` name
    and rename, which is atomic). Moving it first means it is picked up exactly once.
    """
    root = settings.data_dir()
    folder = root / incoming
    params = workflow_params(dag_file)
    models = list(params["model"].schema.get("enum", []))
    deadline = time.monotonic() + wait_s
    confs: list[dict] = []
    while True:
        waiting = pending(folder)
        stable = [p for p in waiting if time.time() - p.stat().st_mtime >= min_age_s]
        for path in stable:
            try:
                conf = params_for(path, folder, models)
                conf["input_path"] = f"{ACCEPTED}{_unique(folder / 'accepted', path.name).name}"
                validate_conf(conf, params)
            except Exception as exc:  # invalid parameters: parked with the reason, never triggered
                target = _move(path, folder / "failed")
                write_error(target, f"not run: its parameters are invalid\n{type(exc).__name__}: {exc}")
                log.warning("%s: invalid parameters, moved to %s: %s", path, target, exc)
                continue
            target = _move(path, folder / "accepted")
            conf["input_path"] = str(target.relative_to(root))
            confs.append(conf)
            log.info("claimed %s -> %s with %s", path, target, conf)
        if confs or not waiting or time.monotonic() > deadline:
            return confs
        time.sleep(min_age_s)


def move_failed_input(context: dict[str, Any]) -> None:
    """The workflow's on_failure_callback: a run of a claimed file that failed parks the file in failed/."""
    try:
        dag_run = context.get("dag_run")
        conf = (getattr(dag_run, "conf", None) or {}) if dag_run is not None else {}
        input_path = str(conf.get("input_path") or "")
        if not input_path.startswith(ACCEPTED):
            return
        root = settings.data_dir()
        path = root / input_path
        if not path.is_file():
            return  # another task of the same run moved it already
        ti = context.get("ti") or context.get("task_instance")
        target = _move(path, root / "incoming" / "failed")
        write_error(
            target,
            f"workflow run {getattr(dag_run, 'run_id', '?')} failed in task {getattr(ti, 'task_id', '?')}\n"
            f"{context.get('exception') or 'see the task log'}\nparameters: {json.dumps(conf, default=str)}",
        )
        log.warning("the run of %s failed: moved it to %s", input_path, target)
    except Exception:  # a callback must never hide the task's own failure
        log.exception("could not move the failed input out of incoming/accepted/")
