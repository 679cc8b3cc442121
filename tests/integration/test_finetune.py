"""Fine-tuning with helical's GeneformerFineTuningModel on the fixture model (real helical code, tiny random
weights): it learns (held-out accuracy above the majority-class rate, measured), a killed training resumes to
the very same weights, bad labels get coded errors, and the model folder loads back and predicts."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from helical_airflow.errors import ConfigError
from helical_airflow.finetune import (
    MODEL_FILE,
    RESULT_FILE,
    FineTuneParams,
    check_labels,
    finetune,
    load_classifier,
    split_rows,
)


@pytest.fixture(scope="module")
def halves(sample_h5ad: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The sample's labelled cells in two stratified halves: fine-tune on one, score on the other."""
    adata = ad.read_h5ad(sample_h5ad)
    rows = np.arange(adata.n_obs)
    train, held = train_test_split(rows, test_size=0.5, stratify=adata.obs["cell_type"].astype(str), random_state=0)
    out = tmp_path_factory.mktemp("halves")
    a, b = out / "train_half.h5ad", out / "held_half.h5ad"
    adata[np.sort(train)].copy().write_h5ad(a)
    adata[np.sort(held)].copy().write_h5ad(b)
    return a, b


def _params(cache: str, **extra: object) -> FineTuneParams:
    base: dict[str, object] = dict(model="geneformer", label_key="cell_type", device="cpu", cache_dir=cache,
                                   batch_size=16, shard_size=200)  # fmt: skip
    return FineTuneParams(**{**base, **extra})


def test_finetuned_geneformer_beats_the_majority_class_on_held_out_cells(
    halves: tuple[Path, Path], fixture_cache: str, tmp_path: Path
) -> None:
    train_half, held_half = halves
    params = _params(fixture_cache, epochs=5, learning_rate=1e-2, max_train_cells=120, validation_fraction=0.2,
                     batch_size=8, patience=3)  # fmt: skip
    trained = finetune(train_half, params, tmp_path / "out")
    folder = trained.folder
    assert folder.parent == tmp_path / "out" / "train_half" / "finetune" / "cell_type"
    assert (folder / MODEL_FILE).is_file() and not list(folder.parent.glob(".work-*"))  # checkpoints cleaned up
    result = json.loads((folder / RESULT_FILE).read_text())
    assert result["split"]["train_cells"] == 120 and result["split"]["stratified"]
    assert len(result["history"]) >= 1 and result["weights_checksum"] and result["input_run_key"]
    assert set(result["labels"]) == set(ad.read_h5ad(train_half, backed="r").obs["cell_type"].astype(str))

    held = ad.read_h5ad(held_half)
    keep, _ = train_test_split(np.arange(held.n_obs), train_size=150, stratify=held.obs["cell_type"].astype(str),
                               random_state=1)  # fmt: skip
    held = held[np.sort(keep)].copy()
    classifier = load_classifier(folder, cache_dir=fixture_cache)
    predicted = classifier.predict(held)
    truth = held.obs["cell_type"].astype(str).to_numpy()
    accuracy = float(np.mean(predicted == truth))
    majority = float(held.obs["cell_type"].value_counts(normalize=True).max())
    print(f"held-out accuracy {accuracy:.3f} vs majority-class rate {majority:.3f}; history {result['history']}")
    assert accuracy > majority, (accuracy, majority, result["history"])


def test_a_killed_training_resumes_to_the_weights_of_an_undisturbed_one(
    sample_h5ad: Path, fixture_cache: str, tmp_path: Path
) -> None:
    import torch

    params = _params(fixture_cache, epochs=2, learning_rate=1e-3, max_train_cells=24, validation_fraction=0.3,
                     patience=5)  # fmt: skip
    straight = finetune(sample_h5ad, params, tmp_path / "straight")

    class Killed(Exception):
        """The stand-in for a kill right after epoch 1's checkpoint."""

    def kill_after_first(metrics: object) -> None:
        raise Killed  # after epoch 1's checkpoint was written: what a SIGKILL between epochs leaves behind

    with pytest.raises(Killed):
        finetune(sample_h5ad, params, tmp_path / "resumed", on_epoch=kill_after_first)
    (work,) = (tmp_path / "resumed" / "sample" / "finetune" / "cell_type").glob(".work-*")
    assert (work / "checkpoint.pt").is_file()
    torch.manual_seed(12345)  # the resumed run must restore the random state from the checkpoint, not inherit it
    np.random.seed(12345)
    epochs_seen: list[int] = []
    resumed = finetune(sample_h5ad, params, tmp_path / "resumed", on_epoch=lambda m: epochs_seen.append(m.epoch))
    assert epochs_seen == [2]  # only the missing epoch ran
    a = torch.load(straight.folder / MODEL_FILE, weights_only=True)
    b = torch.load(resumed.folder / MODEL_FILE, weights_only=True)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert straight.result.history == [h.model_copy(update={"seconds": h0.seconds, "train_cells_per_second":
                                       h0.train_cells_per_second}) for h, h0 in zip(resumed.result.history,
                                       straight.result.history, strict=True)]  # fmt: skip
    # and the check can fail: another seed gives other weights
    other = finetune(sample_h5ad, params.model_copy(update={"seed": 1}), tmp_path / "other")
    c = torch.load(other.folder / MODEL_FILE, weights_only=True)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_bad_labels_get_coded_errors() -> None:
    import pandas as pd

    with pytest.raises(ConfigError) as missing:
        check_labels(pd.DataFrame({"louvain": ["a", "b"]}), "cell_type")
    assert missing.value.code == "E701" and "louvain" in missing.value.message
    with pytest.raises(ConfigError) as one:
        check_labels(pd.DataFrame({"cell_type": ["T"] * 5 + [None, " ", "unknown"]}), "cell_type")
    assert one.value.code == "E702" and "one class only ('T', 5 cells)" in one.value.message
    with pytest.raises(ConfigError) as small:
        check_labels(pd.DataFrame({"cell_type": ["T"] * 5 + ["B"] * 4 + ["rare"]}), "cell_type")
    assert small.value.code == "E703" and "'rare' (1 cells)" in small.value.message
    labels = check_labels(pd.DataFrame({"cell_type": ["T"] * 50 + ["B"] * 30 + ["NK"] * 2 + [None] * 3}), "cell_type")
    train, val, capped = split_rows(labels, FineTuneParams(model="geneformer", label_key="cell_type",
                                                           validation_fraction=0.25, seed=3))  # fmt: skip
    assert not capped and len(set(train) & set(val)) == 0 and len(train) + len(val) == 82
    assert {labels[i] for i in val} == {"T", "B", "NK"} and {labels[i] for i in train} == {"T", "B", "NK"}
    again, _, _ = split_rows(labels, FineTuneParams(model="geneformer", label_key="cell_type",
                                                    validation_fraction=0.25, seed=3))  # fmt: skip
    assert np.array_equal(train, again)
    small_val, _, _ = split_rows(labels, FineTuneParams(model="geneformer", label_key="cell_type",
                                                        validation_fraction=0.02))  # fmt: skip
    assert {labels[i] for i in small_val} == {"T", "B", "NK"}  # one cell of each class at least
    with pytest.raises(ConfigError) as cap:  # fewer training cells than classes: its own code
        split_rows(labels, FineTuneParams(model="geneformer", label_key="cell_type", max_train_cells=2))
    assert cap.value.code == "E810" and "--max-train-cells 3" in cap.value.hint


def test_cells_expressing_no_gene_of_the_vocabulary_are_e811(
    sample_h5ad: Path, fixture_cache: str, tmp_path: Path
) -> None:
    """Labels fine, genes known, but no cell expresses one: nothing to train on (its own code, not a label one)."""
    from scipy import sparse

    adata = ad.read_h5ad(sample_h5ad)[:20].copy()
    adata.X = sparse.csr_matrix(adata.shape, dtype=np.float32)  # every count 0
    adata.obs["cell_type"] = ["a", "b"] * 10
    adata.write_h5ad(tmp_path / "silent.h5ad")
    with pytest.raises(ConfigError) as silent:
        finetune(tmp_path / "silent.h5ad", _params(fixture_cache, epochs=1), tmp_path / "out")
    assert silent.value.code == "E811" and "vocabulary" in silent.value.message


def test_a_second_training_of_the_same_key_waits_for_the_first_and_reuses_its_folder(
    sample_h5ad: Path, fixture_cache: str, tmp_path: Path
) -> None:
    """The CLI run twice (or a DAG retry while the first attempt's process lives): the second waits on the key's
    lock, then finds the first one's folder finished and trains nothing. The two trainings are two threads: an
    flock belongs to an open file, so two open()s of the lock file exclude each other inside one process as between
    two (and the second does not pay helical's import again, ~35 s of a loaded 2-core machine measured). The first
    holds its lock after its epoch until the second has said it waits: no race on who is faster."""
    import logging
    import threading
    import time

    from helical_airflow.finetune import finetune_key, prepare_plan, train_model

    params = _params(fixture_cache, epochs=1, max_train_cells=12, validation_fraction=0.3, shard_size=350)
    out = tmp_path / "out"
    key = finetune_key(prepare_plan(sample_h5ad, params, out), params)
    lock = out / "sample" / "finetune" / "cell_type" / f".lock-{key}"
    second_waits = threading.Event()
    epoch_ended: list[float] = []
    failed: list[BaseException] = []

    def after_epoch(metrics: object) -> None:
        epoch_ended.append(time.time())
        second_waits.wait(120)  # still holding the key's lock

    def first() -> None:
        try:
            train_model(sample_h5ad, params, out, on_epoch=after_epoch)
        except BaseException as exc:  # noqa: BLE001  (reported by the test below)
            failed.append(exc)

    training = threading.Thread(target=first)
    training.start()
    deadline = time.monotonic() + 180
    while not _held(lock):  # the first one trains now
        assert training.is_alive() and time.monotonic() < deadline, f"the first never took the key's lock {failed}"
        time.sleep(0.1)

    waits: list[str] = []

    class SaysItWaits(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            waits.append(record.getMessage())
            second_waits.set()  # let the first one finish

    said_it = SaysItWaits(logging.WARNING)
    logging.getLogger("helical_airflow.shardlock").addHandler(said_it)
    epochs_here: list[int] = []
    try:
        folder, result = train_model(sample_h5ad, params, out, on_epoch=lambda m: epochs_here.append(m.epoch))
    finally:
        logging.getLogger("helical_airflow.shardlock").removeHandler(said_it)
        second_waits.set()
        training.join(120)
    assert not failed and len(epoch_ended) == 1, failed
    assert epochs_here == []  # the second trained nothing: the first one did
    assert waits and all(f"fine-tuning key {key} is being trained" in w for w in waits), waits  # every 30 s
    # the second took the lock (its record: pid, since) only after the first's epoch had ended
    record = json.loads(lock.read_text())
    assert datetime.fromisoformat(record["since"]).timestamp() > epoch_ended[0]
    assert result.finetune_key == key and (folder / MODEL_FILE).is_file() and not _held(lock)


def _held(lock: Path) -> bool:
    """Whether someone holds the flock on `lock` (tried from a new open file, which a holder excludes)."""
    import fcntl

    if not lock.is_file():
        return False
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
