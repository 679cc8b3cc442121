"""The quality gate's real scores (issue 13): collapse always fails; kNN label transfer and silhouette of the
embeddings against a PCA baseline of the same cells, the label column guessed or given, thresholds applied."""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from helical_airflow import quality, scores
from helical_airflow.errors import ConfigError
from helical_airflow.spec import LabelScores, QualityThresholds


def test_nearly_collapsed_embeddings_fail_whatever_the_model() -> None:
    """The issue's example: a mean pairwise cosine of 0.9994 (the scGPT fixture on the sample) fails."""
    rng = np.random.default_rng(0)
    offset = rng.normal(size=32)
    offset /= np.linalg.norm(offset)
    for spread, fails in ((0.025, True), (0.06, False)):
        x = offset + spread * rng.normal(size=(400, 32)) / np.sqrt(32)
        report = quality.assess(x, 400)
        assert (report.mean_pairwise_cosine > quality.MAX_MEAN_COSINE) is fails, report.mean_pairwise_cosine
        assert report.passed is not fails, report.problems
    x = offset + 0.0245 * rng.normal(size=(400, 32)) / np.sqrt(32)
    report = quality.assess(x, 400)
    assert 0.9993 < report.mean_pairwise_cosine < 0.9996 and not report.passed
    assert "mean pairwise cosine 0.999" in report.problems[0]


def test_mostly_identical_rows_fail() -> None:
    x = np.random.default_rng(0).normal(size=(100, 8))
    x[:70] = x[0]
    report = quality.assess(x, 100)
    assert not report.passed and "distinct" in report.problems[0] and report.distinct_fraction == pytest.approx(0.31)


@pytest.mark.parametrize(
    "columns,expected",
    [
        ({"louvain": list("0123") * 25, "bulk_labels": list("ABCD") * 25, "phase": ["G1", "S"] * 50}, "bulk_labels"),
        ({"leiden": list("0123") * 25, "batch": list("ab") * 50}, "leiden"),
        ({"batch": list("ab") * 50, "donor": list("xyz") * 33 + ["x"]}, None),
        ({"CellType": list("AB") * 50, "cell_ontology_class": list("AB") * 50}, "CellType"),
        ({"condition": list("ab") * 50, "clusters": list("0123") * 25}, "condition"),
        ({"n_counts": np.arange(100.0), "barcodes_like": [f"c{i}" for i in range(100)]}, None),
    ],
)
def test_label_guess_prefers_annotations_over_clusterings_and_never_batches(
    columns: dict, expected: str | None
) -> None:
    obs = pd.DataFrame(columns).astype({k: "category" for k, v in columns.items() if not isinstance(v, np.ndarray)})
    choice = scores.choose_label(obs, None)
    assert choice.key == expected
    assert choice.source == ("guessed" if expected else None)
    assert ("--label-key" in choice.note) and (expected is None or repr(expected) in choice.note)


def test_label_guess_on_the_sample(sample_h5ad: Path) -> None:
    from helical_airflow import h5io

    choice = scores.choose_label(h5io.read_obs(sample_h5ad), None)
    assert (choice.key, choice.source) == ("cell_type", "guessed")


def test_unusable_label_key_is_a_config_error(sample_h5ad: Path) -> None:
    with pytest.raises(ConfigError, match="E402.*no column 'nope'"):
        quality.check_label_key(str(sample_h5ad), "nope")
    with pytest.raises(ConfigError, match="numbers"):
        quality.check_label_key(str(sample_h5ad), "n_counts_source")
    quality.check_label_key(str(sample_h5ad), "cell_type")


def _clusters(n: int = 300, k: int = 3, sep: float = 4.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(k), n // k)
    centres = rng.normal(size=(k, 10)) * sep
    return centres[y] + rng.normal(size=(len(y), 10)), y.astype(str)


def test_scores_separate_structure_from_noise() -> None:
    x, y = _clusters()
    good = scores.label_scores(x, y, 0)
    noise = scores.label_scores(np.random.default_rng(1).normal(size=x.shape), y, 0)
    assert good.knn_accuracy > 0.95 and good.silhouette > 0.3
    assert noise.knn_accuracy < 0.55 and abs(noise.silhouette) < 0.05


def test_threshold_messages_name_score_threshold_and_baseline() -> None:
    emb, pca = LabelScores(knn_accuracy=0.61, silhouette=0.02), LabelScores(knn_accuracy=0.83, silhouette=0.11)
    problems = quality.check_thresholds(emb, pca, QualityThresholds(max_knn_drop_vs_pca=0.1, min_silhouette=0.05), "ct")
    assert problems == [
        "kNN label-transfer accuracy on obs['ct'] is 0.610, 0.220 below the PCA baseline's 0.830; the threshold "
        "allows at most 0.100 below it",
        "silhouette on obs['ct'] is 0.020, below the threshold 0.050 (PCA baseline of the same cells: 0.110)",
    ]
    assert quality.check_thresholds(emb, pca, QualityThresholds(max_knn_drop_vs_pca=0.25), "ct") == []


def test_input_stats_stream_in_blocks_and_agree_for_csr_csc_dense(tmp_path: Path, monkeypatch) -> None:
    rng = np.random.default_rng(0)
    counts = sp.random(230, 40, density=0.2, format="csr", random_state=1, data_rvs=lambda n: rng.integers(1, 9, n))
    counts = counts.astype(np.float32)
    monkeypatch.setattr(scores, "ROW_BLOCK_ELEMENTS", 64)  # many blocks
    rows = np.array([0, 5, 77, 229])
    expected_totals = np.asarray(counts.sum(axis=1)).ravel()
    for name, matrix in (("csr", counts), ("csc", counts.tocsc()), ("dense", counts.toarray())):
        path = tmp_path / f"{name}.h5ad"
        ad.AnnData(X=matrix).write_h5ad(path)
        stats = scores.input_stats(path, None, rows)
        np.testing.assert_allclose(stats.counts_per_cell, expected_totals, err_msg=name)
        np.testing.assert_array_equal(stats.genes_per_cell, np.diff(counts.indptr), err_msg=name)
        np.testing.assert_allclose(stats.sample_counts.toarray(), counts[rows].toarray(), err_msg=name)


def test_thresholds_setting_is_validated(monkeypatch) -> None:
    class P:
        fixture = True

    monkeypatch.setenv(quality.THRESHOLDS_ENV, json.dumps({"max_knn_drop_vs_pca": 0.05}))
    applied, source = quality.thresholds_for(P())  # type: ignore[arg-type]
    assert applied == QualityThresholds(max_knn_drop_vs_pca=0.05) and source == quality.THRESHOLDS_ENV
    monkeypatch.setenv(quality.THRESHOLDS_ENV, '{"max_knn_drop": 1}')
    with pytest.raises(ConfigError, match="E403"):
        quality.thresholds_for(P())  # type: ignore[arg-type]
    monkeypatch.delenv(quality.THRESHOLDS_ENV)
    assert quality.thresholds_for(P())[0] is None  # type: ignore[arg-type]  # a fixture: recorded only
