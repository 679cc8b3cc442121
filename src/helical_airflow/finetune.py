"""Fine-tuning with helical's own `*FineTuningModel` classes, as a job built from the pipeline's steps.

    validate -> plan (the input's run key, weights checksum) -> split (stratified, seeded) -> tokenise shard by
    shard into Arrow datasets on disk -> train one epoch at a time (helical's `train`), checkpoint every epoch ->
    early stopping -> model folder (atomic) -> MLflow run + Model Registry (finetune_registry.py)

- helical's `train(epochs=N)` makes a new optimizer on every call and keeps no state between calls, so it is
  called with `epochs=1` once per epoch and handed *our* optimizer through its `optimizer` argument (a factory
  that returns the same AdamW every time): Adam's moments carry over from epoch to epoch as in one long call,
  and they are in the checkpoint. The checkpoint after every epoch holds the weights, the optimizer, torch's,
  numpy's and Python's random states, the history and the early-stopping state: a killed training resumes from
  its last finished epoch and ends with the weights an undisturbed one ends with (tests/integration/
  test_finetune.py checks torch.equal on every tensor).
- Class imbalance: `class_weighting="balanced"` (the default) passes helical a CrossEntropyLoss weighted
  n / (k * n_c) over the training classes (scikit-learn's "balanced"); "none" is the plain loss. Recorded.
- Early stopping watches the validation macro F1 (ties: the lower validation loss); after `patience` epochs
  without a better one training stops. The model folder holds the best epoch's weights.
- Tokens live on disk: each shard's cells are tokenised by helical's `process_data` and written with
  `Dataset.save_to_disk`; training reads them back with `load_from_disk` (memory-mapped Arrow), shuffled per
  epoch by an index mapping (8 bytes a cell). Every family's tokens are Arrow: where helical's `process_data`
  returns an in-memory torch Dataset (scGPT, UCE) its items are written as Arrow rows (models/finetuning.py).
  The per-family part (build, tokenise, one epoch, logits) lives in `models/<family>/finetune.py`.

The model folder, `<out>/<dataset>/finetune/<label_key>/<finetune_key>/`, is built in a temp folder and
renamed into place: model.pt (helical's `save_model`), finetune.json (`FineTuneResult`: label map, base model
and weights checksum, the input's run key and sha256, parameters, split, class weights, per-epoch metrics,
early stopping) and split.json (the rows of each split). `load_classifier` loads it back (or `models:/NAME@ALIAS`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import finetune_registry, finetune_report, modality, telemetry
from .atomic import current_umask, write_with
from .embed import resolve_device, use_cache_dir
from .errors import ConfigError
from .finetune_registry import MODEL_FILE, REGISTRY_FILE, RESULT_FILE, SPLIT_FILE, safe_name
from .finetune_spec import (
    FINETUNE_VERSION,
    ClassWeighting,
    EpochMetrics,
    FineTuneParams,
    FineTuneResult,
    SplitRecord,
)
from .labels import check_classes, read_column
from .models import get_model, registry
from .models import runner as model_runner
from .models.cache import models_dir
from .models.finetuning import FineTuneFamily, autocast, training_precision
from .models.vocab import gene_list_sha256
from .pipeline import prepare
from .plan import weights_checksum
from .spec import Plan, RunParams
from .store import write_json

log = logging.getLogger(__name__)

__all__ = ["MODEL_FILE", "REGISTRY_FILE", "RESULT_FILE", "SPLIT_FILE"]  # the folder's files (finetune_registry)
CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"


# ---- the families -------------------------------------------------------------------------------------------


def family_for(model: str) -> FineTuneFamily:
    """The family's FineTuneFamily (models/<family>/finetune.py, named in the registry); E807 for a family without
    one (the fix says why where the registry knows: Caduceus needs CUDA)."""
    spec = get_model(model)
    family = registry.get_family(spec)
    found = family.finetune_family()
    if found is None:
        able = ", ".join(name for name, f in registry.FAMILIES.items() if f.finetune)
        why = f"{family.finetune_unsupported}; " if family.finetune_unsupported else ""
        raise ConfigError(
            "E807", f"fine-tuning is not available for {model!r} (family {spec.family})",
            f"{why}fine-tune one of: {able} (docs/finetune.md)",
        )  # fmt: skip
    return found


# ---- labels and split ---------------------------------------------------------------------------------------


def check_labels(table: pd.DataFrame, key: str) -> pd.Series:
    """The label column as stripped text, None for an unlabelled cell (labels.py: the rule annotation uses too);
    E701 no such column, E702 fewer than two classes, E703 a class with a single cell (a stratified split needs one
    cell of each class on each side)."""
    values = read_column(table, key, "the training data", "pass --label-key with one of those columns")
    check_classes(values, key, "the training data", 2, "a training/validation split (one cell on each side)",
                  "drop or merge those classes (or label more cells of them) before fine-tuning")  # fmt: skip
    return pd.Series(values, index=table.index, dtype=object)


def _stratified_cap(rows: np.ndarray, y: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    """At most `cap` of `rows`, each class in proportion (at least one cell of each class)."""
    if len(rows) <= cap:
        return rows
    names, counts = np.unique(y, return_counts=True)
    quota = np.maximum(1, np.floor(cap * counts / counts.sum())).astype(int)
    order = np.argsort(-(cap * counts / counts.sum() - quota))  # largest remainders first
    for i in order[: max(0, cap - int(quota.sum()))]:
        quota[i] += 1
    keep = [rng.permutation(rows[y == name])[: min(q, c)] for name, q, c in zip(names, quota, counts, strict=True)]
    return np.sort(np.concatenate(keep))


def split_rows(labels: pd.Series, params: FineTuneParams) -> tuple[np.ndarray, np.ndarray, bool]:
    """Stratified, seeded train/validation rows of the labelled cells (then the training rows capped at
    max_train_cells, stratified, and the validation rows in the same proportion)."""
    present = labels.notna().to_numpy()
    rows = np.flatnonzero(present)
    y = labels.to_numpy()[present].astype(str)
    n_classes = len(set(y))
    # per class: round(fraction * cells) to validation, at least one cell on each side (scikit-learn's
    # train_test_split(stratify=) may leave a 2-cell class out of the validation split entirely)
    rng = np.random.default_rng(params.seed)
    train_parts, val_parts = [], []
    for name in sorted(set(y)):
        members = rng.permutation(rows[y == name])
        take = min(len(members) - 1, max(1, int(round(params.validation_fraction * len(members)))))
        val_parts.append(members[:take])
        train_parts.append(members[take:])
    train, val = np.concatenate(train_parts), np.concatenate(val_parts)
    train, val = np.sort(train), np.sort(val)
    capped = params.max_train_cells is not None and len(train) > params.max_train_cells
    if capped and params.max_train_cells is not None:
        if params.max_train_cells < n_classes:
            raise ConfigError("E810", f"--max-train-cells {params.max_train_cells} is below the {n_classes} classes",
                              f"pass --max-train-cells {n_classes} or more")  # fmt: skip
        full = labels.to_numpy().astype(str)
        train = _stratified_cap(train, full[train], params.max_train_cells, rng)
        ratio = params.validation_fraction / (1 - params.validation_fraction)
        val = _stratified_cap(val, full[val], max(n_classes, int(np.ceil(len(train) * ratio))), rng)
    return train, val, capped


def class_weights(y: np.ndarray, n_classes: int, how: ClassWeighting) -> list[float]:
    if how == "none":
        return [1.0] * n_classes
    counts = np.bincount(y, minlength=n_classes).astype(float)
    return [float(len(y) / (n_classes * c)) if c else 0.0 for c in counts]


# ---- tokens on disk -----------------------------------------------------------------------------------------


def tokenise_rows(fam: FineTuneFamily, model: Any, vocab: Any, data: Any) -> tuple[Any, np.ndarray]:
    """helical's tokens (Arrow) of the cells of `data` that express a known gene (or of the records), and which
    rows those are."""

    subset, keep = fam.select(data, vocab)
    if subset is None:
        return None, keep
    return fam.tokenise(model, subset), keep


def tokenise_split_shard(fam: FineTuneFamily, model: Any, vocab: Any, plan: Plan, shard_index: int, rows: np.ndarray,
                         label_ids: np.ndarray, folder: Path) -> Path | None:  # fmt: skip
    """Tokenise the cells `rows` (with their label ids) that lie in plan shard `shard_index` into
    `folder/<shard>/` (written to a temp folder and renamed: a killed run redoes only the missing shards; a shard
    already there is kept). None when the shard holds none of `rows`."""

    shard = plan.shards[shard_index]
    inside = (rows >= shard.start) & (rows < shard.stop)
    if not inside.any():
        return None
    target = folder / f"{shard.index:05d}"
    if (target / "rows.json").is_file():
        return target
    adata = modality.of(plan.input).read_shard(plan.input, shard.start, shard.stop, plan.params.layer)
    local = rows[inside] - shard.start
    tokens, keep = tokenise_rows(fam, model, vocab, fam.take(adata, local))
    kept_rows = rows[inside][keep]
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=folder))
    try:
        if tokens is not None:
            tokens = tokens.add_column("label", [int(v) for v in label_ids[inside][keep]])
            tokens = tokens.add_column("row", [int(r) for r in kept_rows])
            tokens.save_to_disk(str(tmp / "tokens"))
        (tmp / "rows.json").write_text(json.dumps({"kept": kept_rows.tolist(), "dropped": int((~keep).sum())}))
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def tokenise_split(fam: FineTuneFamily, model: Any, vocab: Any, plan: Plan, rows: np.ndarray, label_ids: np.ndarray,
                   folder: Path) -> tuple[Any, int]:  # fmt: skip
    """Tokenise `rows` shard by shard into `folder/<shard>/` (tokenise_split_shard); returns the concatenated
    memory-mapped dataset and the cells dropped for expressing no known gene."""
    from datasets import concatenate_datasets, load_from_disk

    parts, dropped = [], 0
    for shard in plan.shards:
        target = tokenise_split_shard(fam, model, vocab, plan, shard.index, rows, label_ids, folder)
        if target is None:
            continue
        record = json.loads((target / "rows.json").read_text())
        dropped += int(record["dropped"])
        if record["kept"]:
            parts.append(load_from_disk(str(target / "tokens")))
    if not parts:
        raise ConfigError("E811", "no cell of this split expresses a gene of the model's vocabulary",
                          "check the input's gene ids (helical-airflow validate)")  # fmt: skip
    return (parts[0] if len(parts) == 1 else concatenate_datasets(parts)), dropped


def vocabulary_sha256(vocab: Any) -> str:
    """The base model's gene vocabulary as one hash: its native ids (Ensembl or symbols), sorted."""
    return gene_list_sha256(sorted(vocab.ensembl if vocab.native == "ensembl" else vocab.symbols))


# ---- checkpoints --------------------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    import torch

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _torch_save(path: Path, obj: Any) -> None:
    import torch

    write_with(path, lambda tmp: torch.save(obj, tmp))


# ---- the job ------------------------------------------------------------------------------------------------


def finetune_key(plan: Plan, params: FineTuneParams) -> str:
    keyed = {"input_run_key": plan.run_key, "params": params.keyed(), "version": FINETUNE_VERSION}
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:16]


def model_root(out_root: Path, dataset: str, label_key: str) -> Path:
    return out_root / dataset / "finetune" / safe_name(label_key)


class _RecordingLoss:
    """The loss helical's train() is given: cross-entropy (class-weighted when asked), remembering each batch's."""

    def __init__(self, weight: Any) -> None:
        import torch

        self.fn = torch.nn.CrossEntropyLoss(weight=weight)
        self.losses: list[float] = []

    def __call__(self, outputs: Any, target: Any) -> Any:
        loss = self.fn(outputs, target.to(outputs.device))
        self.losses.append(float(loss.item()))
        return loss


def _score(logits: np.ndarray, y: np.ndarray, weight: Any) -> tuple[float, float, float]:
    import torch
    from sklearn.metrics import accuracy_score, f1_score

    loss = torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(y).long(), weight=weight)
    predicted = logits.argmax(axis=1)
    return float(loss), float(accuracy_score(y, predicted)), float(f1_score(y, predicted, average="macro"))


@dataclass
class Trained:
    folder: Path
    result: FineTuneResult
    registration: dict[str, Any] | None


EpochCallback = Callable[[EpochMetrics], None]


def prepare_plan(input_path: str | Path, params: FineTuneParams, out_root: Path) -> Plan:
    """validate -> plan of the embedding pipeline (the same run key as `helical-airflow run` with these settings)."""

    run_params = RunParams(model=params.model, shard_size=params.shard_size, device=params.device,
                           seed=params.seed, cache_dir=params.cache_dir)  # fmt: skip
    return prepare(input_path, run_params, out_root)


def finetune(
    input_path: str | Path,
    params: FineTuneParams,
    out_root: Path,
    tracking_uri: str | None = None,
    on_epoch: EpochCallback | None = None,
) -> Trained:
    """Fine-tune (or resume, or reuse a finished folder) and register it when tracking is configured."""

    folder, result = train_model(input_path, params, out_root, on_epoch)
    registration = finetune_registry.register_folder(folder, result, tracking_uri)
    return Trained(folder=folder, result=result, registration=registration)


def train_model(
    input_path: str | Path, params: FineTuneParams, out_root: Path, on_epoch: EpochCallback | None = None
) -> tuple[Path, FineTuneResult]:
    """Fine-tune (or resume from the last finished epoch, or reuse a finished folder) without registering: the
    training half of `finetune`, which the fine-tuning DAG's train task runs (its register task registers). The
    training holds the key's lock (finetune_registry.key_lock): a second one of the same key waits for it."""

    fam = family_for(params.model)
    plan = prepare_plan(input_path, params, out_root)
    table = modality.of(plan.input).metadata(plan.input)
    labels = check_labels(table, params.label_key)
    key = finetune_key(plan, params)
    root = model_root(out_root.resolve(), plan.dataset, params.label_key)
    folder = root / key
    if not (folder / RESULT_FILE).is_file():
        # one training per key: a second one (the CLI twice, a DAG retry while the first attempt's process lives)
        # would write the same .work-<key>/ tokens and checkpoints; it waits here, then reuses the folder
        with finetune_registry.key_lock(root, key):
            if not (folder / RESULT_FILE).is_file():
                _train(fam, plan, params, labels, key, root, on_epoch)
                return folder, FineTuneResult.model_validate_json((folder / RESULT_FILE).read_text())
    log.info("fine-tuned model %s is finished already; reusing it", folder)
    return folder, FineTuneResult.model_validate_json((folder / RESULT_FILE).read_text())


@dataclass
class _Ready:
    spec: Any
    device: str
    vocab: Any
    names: list[str]
    label_ids: np.ndarray
    train_rows: np.ndarray
    val_rows: np.ndarray
    capped: bool
    config: dict[str, Any]
    model: Any


def _setup(fam: FineTuneFamily, plan: Plan, params: FineTuneParams, labels: pd.Series, device: str | None = None
           ) -> _Ready:  # fmt: skip
    """The device, the weights cache, the vocabulary, the label map, the split and the seeded model: what training
    and each tokenise task start from (the same in every process: the split and the head are seeded). `device`
    overrides the resolved one: the tokenise tasks build the model on the CPU (tokens do not depend on the device,
    and those tasks run on the default queue, where a GPU-only profile would stop with E206)."""
    spec = get_model(params.model)
    device = device or resolve_device(params.device, spec.profile.gpu, plan.fixture)
    registry.check_runnable(spec, device, "helical")
    use_cache_dir(plan.params.cache_dir)
    cache_dir = model_runner.helical_prefix()
    registry.require_files(spec, plan.params.options, cache_dir)
    model_runner.trust_cached_files(registry.required_files(spec, plan.params.options), cache_dir)
    model_runner.drop_helical_log_handler()
    vocab = registry.get_family(spec).vocabulary(spec, plan.params.options, models_dir(cache_dir))

    names = sorted({v for v in labels if v is not None})
    ids = {name: i for i, name in enumerate(names)}
    label_ids = np.array([ids.get(v, -1) if v is not None else -1 for v in labels], dtype=np.int64)
    train_rows, val_rows, capped = split_rows(labels, params)

    model_runner.seed_everything(params.seed)  # the head's initial weights, dropout: seeded
    config = fam.config(plan, device, params.batch_size)
    model = fam.build(config, len(names))
    fam.check_params(model, params.freeze_layers)
    return _Ready(spec, device, vocab, names, label_ids, train_rows, val_rows, capped, config, model)


def tokenise_shard(plan: Plan, params: FineTuneParams, shard_index: int) -> Path:
    """The fine-tuning DAG's mapped tokenise task: plan shard `shard_index`'s training and validation cells
    tokenised into the training's work folder (`<model root>/.work-<key>/tokens/{train,val}/<shard>/`), where
    `train_model` finds them and tokenises only the shards still missing. Returns the tokens folder."""

    fam = family_for(params.model)
    if not 0 <= shard_index < len(plan.shards):
        raise ConfigError("E809", f"shard {shard_index} is not in the plan (it has {len(plan.shards)} shards)",
                          f"pass a shard index from 0 to {len(plan.shards) - 1}")  # fmt: skip
    labels = check_labels(modality.of(plan.input).metadata(plan.input), params.label_key)
    key = finetune_key(plan, params)
    tokens = model_root(plan.out_path.parent.parent, plan.dataset, params.label_key) / f".work-{key}" / "tokens"
    ready = _setup(fam, plan, params, labels, device="cpu")
    for split, rows in (("train", ready.train_rows), ("val", ready.val_rows)):
        tokenise_split_shard(fam, ready.model, ready.vocab, plan, shard_index, rows, ready.label_ids[rows],
                             tokens / split)  # fmt: skip
    return tokens


def _train(fam: FineTuneFamily, plan: Plan, params: FineTuneParams, labels: pd.Series, key: str, root: Path,
           on_epoch: EpochCallback | None) -> None:  # fmt: skip
    import torch

    started_all = time.perf_counter()
    work = root / f".work-{key}"
    work.mkdir(parents=True, exist_ok=True)
    ready = _setup(fam, plan, params, labels)
    spec, device, vocab, names, label_ids = ready.spec, ready.device, ready.vocab, ready.names, ready.label_ids
    train_rows, val_rows, capped, config, model = (
        ready.train_rows,
        ready.val_rows,
        ready.capped,
        ready.config,
        ready.model,
    )
    precision = training_precision(device, spec.profile.precision)
    if plan.fixture:
        log.warning("FIXTURE model: random base weights from `models fixture`; the fine-tuned model proves the "
                    "pipeline, not the biology")  # fmt: skip

    train_ds, train_dropped = tokenise_split(fam, model, vocab, plan, train_rows, label_ids[train_rows],
                                             _mkdir(work / "tokens" / "train"))  # fmt: skip
    val_ds, val_dropped = tokenise_split(fam, model, vocab, plan, val_rows, label_ids[val_rows],
                                         _mkdir(work / "tokens" / "val"))  # fmt: skip
    y_train = np.asarray(train_ds["label"], dtype=np.int64)
    y_val = np.asarray(val_ds["label"], dtype=np.int64)
    weights = class_weights(y_train, len(names), params.class_weighting)
    weight_tensor = torch.tensor(weights, dtype=torch.float32)

    optimizer = torch.optim.AdamW(model.parameters(), lr=params.learning_rate)
    history: list[EpochMetrics] = []
    best: EpochMetrics | None = None
    bad_epochs, stopped = 0, False
    checkpoint = work / CHECKPOINT
    if checkpoint.is_file():  # resume after the last finished epoch
        state = torch.load(checkpoint, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        history = [EpochMetrics.model_validate(h) for h in json.loads(state["history"])]
        best = EpochMetrics.model_validate_json(state["best"]) if state["best"] else None
        bad_epochs, stopped = int(state["bad_epochs"]), bool(state["stopped"])
        log.info("resuming fine-tuning after epoch %d (checkpoint %s)", len(history), checkpoint)

    while len(history) < params.epochs and not stopped:
        epoch = len(history) + 1
        started = time.perf_counter()
        torch.nn.Module.train(model, True)  # dropout on (helical's own train() leaves the mode as it is)
        shuffled = train_ds.shuffle(seed=params.seed + epoch, keep_in_memory=True)  # an index mapping only
        loss = _RecordingLoss(weight_tensor.to(device))
        with autocast(device, spec.profile.precision):  # CUDA only: the profile's 16-bit dtype (bf16 for training)
            fam.train_epoch(model, shuffled, np.asarray(shuffled["label"], dtype=np.int64), optimizer, loss,
                            params.freeze_layers)  # fmt: skip
        train_seconds = time.perf_counter() - started
        val_loss, val_acc, val_f1 = _score(fam.logits(model, val_ds), y_val, weight_tensor)
        metrics = EpochMetrics(
            epoch=epoch, train_loss=float(np.mean(loss.losses)) if loss.losses else float("nan"),
            val_loss=val_loss, val_accuracy=val_acc, val_macro_f1=val_f1,
            seconds=time.perf_counter() - started, train_cells_per_second=len(y_train) / max(train_seconds, 1e-9),
        )  # fmt: skip
        history.append(metrics)
        better = best is None or (val_f1, -val_loss) > (best.val_macro_f1, -best.val_loss)
        if better:
            best, bad_epochs = metrics, 0
            _torch_save(work / BEST, model.state_dict())
        else:
            bad_epochs += 1
            stopped = bad_epochs >= params.patience
        log.info("epoch %d/%d: train loss %.4f, val loss %.4f, val accuracy %.3f, val macro F1 %.3f (%.1f s)%s",
                 epoch, params.epochs, metrics.train_loss, val_loss, val_acc, val_f1, metrics.seconds,
                 "; early stop" if stopped else "")  # fmt: skip
        _torch_save(checkpoint, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng": rng_state(),
            "history": json.dumps([h.model_dump() for h in history]), "best": best.model_dump_json() if best else "",
            "bad_epochs": bad_epochs, "stopped": stopped,
        })  # fmt: skip
        # StatsD (off unless HELICAL_AIRFLOW_STATSD_HOST is set): helical_finetune_*, the CLI's and the DAG's alike
        telemetry.emit_epoch(params.model, plan.dataset, params.label_key, key, metrics, bad_epochs)
        if on_epoch:
            on_epoch(metrics)
    assert best is not None

    model.load_state_dict(torch.load(work / BEST, weights_only=True))
    # the kept weights on the validation split once more: report.html's confusion matrix and per-class table
    validation = finetune_report.validation_scores(y_val, fam.logits(model, val_ds).argmax(axis=1), names)
    split_rows_record = {"train": [int(r) for r in train_ds["row"]], "val": [int(r) for r in val_ds["row"]]}
    rows_text = json.dumps(split_rows_record)
    names_arr = np.array(names)
    result = FineTuneResult(
        finetune_key=key, family=fam.family, model=params.model, helical_model_name=plan.helical_model_name,
        weights_checksum=plan.weights_checksum, fixture=plan.fixture, input_path=plan.input.path,
        input_sha256=plan.input.sha256, input_run_key=plan.run_key, dataset=plan.dataset, label_key=params.label_key,
        labels=names, params=params.model_dump(exclude={"cache_dir"}), helical_config=config,
        split=SplitRecord(
            seed=params.seed, validation_fraction=params.validation_fraction,
            labelled_cells=int(labels.notna().sum()), unlabelled_cells=int(labels.isna().sum()),
            train_cells=len(y_train), val_cells=len(y_val),
            train_per_class=dict(Counter(names_arr[y_train].tolist())),
            val_per_class=dict(Counter(names_arr[y_val].tolist())),
            capped_by_max_train_cells=capped, dropped_no_known_gene={"train": train_dropped, "val": val_dropped},
            rows_sha256=hashlib.sha256(rows_text.encode()).hexdigest(),
        ),
        class_weighting=params.class_weighting, class_weights=weights,
        early_stopping={"monitor": "val_macro_f1 (ties: lower val_loss)", "patience": params.patience,
                        "best_epoch": best.epoch, "stopped_early": stopped, "epochs_run": len(history)},
        history=history, best=best, tokens_on_disk=fam.tokens_on_disk, device=device, training_precision=precision,
        vocabulary_sha256=vocabulary_sha256(vocab), validation=validation,
        seconds=time.perf_counter() - started_all, created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )  # fmt: skip
    folder = root / key
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
    try:
        model.save_model(str(tmp / MODEL_FILE))
        (tmp / SPLIT_FILE).write_text(rows_text + "\n")
        write_json(tmp / RESULT_FILE, result)
        (tmp / finetune_report.REPORT_FILE).write_text(finetune_report.render(result))
        os.chmod(tmp, 0o777 & ~current_umask())
        os.replace(tmp, folder)  # the folder appears complete or not at all
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    log.info("fine-tuned model written to %s (best epoch %d: val accuracy %.3f, macro F1 %.3f)",
             folder, best.epoch, best.val_accuracy, best.val_macro_f1)  # fmt: skip


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


# ---- loading back -------------------------------------------------------------------------------------------


@dataclass
class Classifier:
    """A fine-tuned model loaded back: `predict_proba(adata)` / `predict(adata)` on cells of any .h5ad."""

    result: FineTuneResult
    model: Any
    family: FineTuneFamily
    vocab: Any
    folder: str

    @property
    def labels(self) -> list[str]:
        return self.result.labels

    def predict_proba(self, adata: Any) -> np.ndarray:
        """(n_cells, n_classes) softmax probabilities (cells: an AnnData; records: a list of seqio Records); NaN rows
        for cells that express no known gene."""
        out = np.full((len(adata), len(self.labels)), np.nan, dtype=np.float32)
        tokens, keep = tokenise_rows(self.family, self.model, self.vocab, adata)
        if tokens is not None:
            logits = self.family.logits(self.model, tokens)
            logits = logits - logits.max(axis=1, keepdims=True)
            probs = np.exp(logits)
            out[keep] = probs / probs.sum(axis=1, keepdims=True)
        return out

    def predict(self, adata: Any) -> np.ndarray:
        """Predicted labels (object array; None for cells that express no known gene)."""
        probs = self.predict_proba(adata)
        names = np.array(self.labels, dtype=object)
        known = ~np.isnan(probs).any(axis=1)
        predicted = np.full(len(adata), None, dtype=object)
        predicted[known] = names[np.nanargmax(probs[known], axis=1)]
        return predicted


def load_classifier(
    folder_or_uri: str | Path, cache_dir: str | None = None, tracking_uri: str | None = None, device: str = "cpu"
) -> Classifier:
    """A fine-tuned model from its folder or from the registry (`models:/NAME@ALIAS`, `models:/NAME/VERSION`).

    The base model's files come from the weights cache (`cache_dir`, as for `run`) and must be the ones it was
    fine-tuned from (E805)."""

    text = str(folder_or_uri)
    folder = finetune_registry.download(text, tracking_uri) if text.startswith("models:/") else Path(text)
    if not (folder / RESULT_FILE).is_file() or not (folder / MODEL_FILE).is_file():
        raise ConfigError("E806", f"{folder} is not a fine-tuned model folder (no {RESULT_FILE} and {MODEL_FILE})",
                          "pass the folder `helical-airflow finetune` printed, or models:/NAME@ALIAS")  # fmt: skip
    result = FineTuneResult.model_validate_json((folder / RESULT_FILE).read_text())
    family = registry.FAMILIES.get(result.family)
    fam = family.finetune_family() if family else None
    if fam is None:
        raise ConfigError("E807", f"fine-tuned family {result.family!r} has no loader in this version",
                          "upgrade helical-airflow")  # fmt: skip
    spec = get_model(result.model)
    use_cache_dir(cache_dir)
    prefix = model_runner.helical_prefix()
    options = registry.resolve_options(spec, {})
    files = registry.weights_files(spec, options, prefix)
    found, _ = weights_checksum(files, models_dir(prefix)) if files else ("", {})
    if found != result.weights_checksum:
        raise ConfigError(
            "E805", f"the base model {result.model!r} in the weights cache ({prefix or 'helical default'}) is not the "
            f"one this classifier was fine-tuned from (weights checksum {found[:12] or 'none'} vs "
            f"{result.weights_checksum[:12]})",
            "pass the --cache-dir the model was fine-tuned with (fixture or real weights)",
        )  # fmt: skip
    model_runner.trust_cached_files(registry.required_files(spec, options), prefix)
    model_runner.drop_helical_log_handler()
    vocab = registry.get_family(spec).vocabulary(spec, options, models_dir(prefix))
    config = {**result.helical_config, "device": device}
    model = fam.build(config, len(result.labels))
    model.load_model(str(folder / MODEL_FILE))
    return Classifier(result=result, model=model, family=fam, vocab=vocab, folder=str(folder))
