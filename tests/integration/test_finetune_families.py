"""Fine-tuning beyond Geneformer, on the fixture models (real helical *FineTuningModel code, tiny random weights):
scGPT and UCE on cells, HyenaDNA, Helix-mRNA and Mamba2-mRNA on the records of a labelled sequence table. Each
writes a model folder that loads back and predicts one probability per class; Mamba2-mRNA (the quickest sequence
family measured) must beat the majority class on held-out records; Caduceus stops with E807 saying it needs CUDA.
Kept tiny for CI time (docs/finetune.md has the timings)."""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import numpy as np
import pytest

from helical_airflow import modality
from helical_airflow.errors import ConfigError
from helical_airflow.finetune import (
    MODEL_FILE,
    RESULT_FILE,
    FineTuneParams,
    family_for,
    finetune,
    load_classifier,
    prepare_plan,
    tokenise_shard,
)
from helical_airflow.models.finetuning import training_precision


@pytest.fixture(scope="module")
def cells(sample_h5ad: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 cells of the sample: 4 of each of its 3 largest cell types."""
    adata = ad.read_h5ad(sample_h5ad)
    types = adata.obs["cell_type"].astype(str)
    rows = np.concatenate([np.flatnonzero(types == t)[:4] for t in types.value_counts().index[:3]])
    path = tmp_path_factory.mktemp("cells") / "cells.h5ad"
    adata[np.sort(rows)].copy().write_h5ad(path)
    return path


def _records(n: int, seed: int) -> str:
    """n labelled DNA records, 30-60 nt: AT-rich ("AT") or GC-rich ("GC"), alternating (a learnable signal)."""
    rng = np.random.default_rng(seed)
    lines = ["id,sequence,label"]
    for i in range(n):
        rich = ["A", "T"] if i % 2 == 0 else ["G", "C"]
        poor = ["G", "C"] if i % 2 == 0 else ["A", "T"]
        letters = rng.choice(rich + poor, size=int(rng.integers(30, 60)), p=[0.4, 0.4, 0.1, 0.1])
        lines.append(f"r{seed}_{i},{''.join(letters)},{'AT' if i % 2 == 0 else 'GC'}")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("records")
    (root / "train.csv").write_text(_records(16, seed=0))
    (root / "held.csv").write_text(_records(12, seed=1))
    return root / "train.csv", root / "held.csv"


def _params(model: str, cache: str, **extra: object) -> FineTuneParams:
    base: dict[str, object] = dict(model=model, label_key="cell_type", device="cpu", cache_dir=cache, epochs=1,
                                   batch_size=4, shard_size=8, learning_rate=1e-3, validation_fraction=0.3)  # fmt: skip
    return FineTuneParams(**{**base, **extra})


def _check_folder(folder: Path, family: str, n_classes: int) -> dict[str, object]:
    assert (folder / MODEL_FILE).is_file() and not list(folder.parent.glob(".work-*"))
    result = json.loads((folder / RESULT_FILE).read_text())
    assert result["family"] == family and len(result["labels"]) == n_classes and result["tokens_on_disk"]
    assert len(result["history"]) == 1 and result["split"]["stratified"] and result["training_precision"] == "fp32"
    return result


@pytest.mark.parametrize("model", ["scgpt", "uce"])
def test_a_cell_family_fine_tunes_and_loads_back(model: str, cells: Path, fixture_cache: str, tmp_path: Path) -> None:
    trained = finetune(cells, _params(model, fixture_cache, shard_size=100), tmp_path / "out")  # one process_data
    _check_folder(trained.folder, model, 3)
    adata = ad.read_h5ad(cells)
    probs = load_classifier(trained.folder, cache_dir=fixture_cache).predict_proba(adata)
    assert probs.shape == (adata.n_obs, 3) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("model", ["hyena_dna", "helix_mrna"])
def test_a_sequence_family_fine_tunes_and_loads_back(
    model: str, records: tuple[Path, Path], fixture_cache: str, tmp_path: Path
) -> None:
    train, held = records
    params = _params(model, fixture_cache, label_key="label", shard_size=100)
    trained = finetune(train, params, tmp_path / "out")
    result = _check_folder(trained.folder, model, 2)
    assert result["helical_config"]["tokens"] == 59 + (2 if model == "hyena_dna" else 1)  # longest record + specials
    summary = prepare_plan(held, params, tmp_path / "held").input
    data = modality.of(summary).read_shard(summary, 0, summary.n_cells, None)
    probs = load_classifier(trained.folder, cache_dir=fixture_cache).predict_proba(data)
    assert probs.shape == (12, 2) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_finetuned_mamba2_mrna_beats_the_majority_class_on_held_out_records(
    records: tuple[Path, Path], fixture_cache: str, tmp_path: Path
) -> None:
    train, held = records
    params = _params("mamba2_mrna", fixture_cache, label_key="label", epochs=2)
    plan = prepare_plan(train, params, tmp_path / "out")
    assert len(plan.shards) == 2
    for shard in plan.shards:  # what the DAG's mapped tokenise tasks run before its train task
        tokens = tokenise_shard(plan, params, shard.index)
    assert sorted(p.name for p in (tokens / "train").iterdir()) == ["00000", "00001"]
    trained = finetune(train, params, tmp_path / "out")  # finds the shards tokenised
    assert (trained.folder / MODEL_FILE).is_file() and trained.result.labels == ["AT", "GC"]
    summary = prepare_plan(held, params, tmp_path / "held").input
    data = modality.of(summary).read_shard(summary, 0, summary.n_cells, None)
    truth = np.array([r.extra["label"] for r in data])
    predicted = load_classifier(trained.folder, cache_dir=fixture_cache).predict(data)
    accuracy = float(np.mean(predicted == truth))
    majority = float(max(np.mean(truth == "AT"), np.mean(truth == "GC")))
    print(f"held-out accuracy {accuracy:.3f} vs majority-class rate {majority:.3f}; {trained.result.history}")
    assert accuracy > majority, (accuracy, majority, trained.result.history)


def test_caduceus_says_it_needs_cuda_and_unsupported_freezing_is_a_coded_error() -> None:
    with pytest.raises(ConfigError) as caduceus:
        family_for("caduceus")
    assert caduceus.value.code == "E807" and "CUDA" in caduceus.value.hint
    with pytest.raises(ConfigError) as freeze:
        family_for("scgpt").check_params(None, 2)
    assert freeze.value.code == "E808" and "--freeze-layers" in freeze.value.hint
    assert training_precision("cpu", "fp16") == "fp32" and training_precision("cuda:0", "fp16") == "bf16"
