"""Fine-tuning with helical's GeneformerFineTuningModel on the fixture model (real helical code, tiny random
weights): it learns (held-out accuracy above the majority-class rate, measured), a killed training resumes to
the very same weights, bad labels get coded errors, and the model folder loads back and predicts."""

from __future__ import annotations

import json
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
    assert missing.value.code == "E801" and "louvain" in missing.value.message
    with pytest.raises(ConfigError) as one:
        check_labels(pd.DataFrame({"cell_type": ["T"] * 5 + [None]}), "cell_type")
    assert one.value.code == "E802"
    with pytest.raises(ConfigError) as small:
        check_labels(pd.DataFrame({"cell_type": ["T"] * 5 + ["B"] * 4 + ["rare"]}), "cell_type")
    assert small.value.code == "E803" and "rare" in small.value.message
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
