"""`annotate`: a labelled reference annotates a query through the embedding pipeline (Geneformer fixture weights,
helical's real code), the second call reuses both runs, and bad references stop with a coded error before anything
is embedded."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from sklearn.model_selection import train_test_split
from typer.testing import CliRunner

from helical_airflow.annotate import (
    ANNOTATION_HTML,
    ANNOTATION_JSON,
    ANNOTATIONS,
    UNKNOWN,
    AnnotateParams,
    AnnotationResult,
    annotate,
    check_reference_labels,
)
from helical_airflow.cli import app
from helical_airflow.errors import ConfigError
from helical_airflow.spec import RunParams

KEY = "cell_type"
QUERY_ONLY = "CD34+ progenitor"  # the query's name for CD34+: a label the reference lacks


@pytest.fixture(scope="module")
def halves(tmp_path_factory: pytest.TempPathFactory, sample_h5ad: Path) -> tuple[Path, Path]:
    """The sample split in two, stratified by cell type (seeded): a reference and a query; the query calls its
    CD34+ cells by another name (a label the reference lacks)."""
    whole = ad.read_h5ad(sample_h5ad)
    ref_rows, query_rows = train_test_split(
        np.arange(whole.n_obs), test_size=0.5, stratify=whole.obs[KEY], random_state=0
    )
    folder = tmp_path_factory.mktemp("halves")
    reference, query = whole[np.sort(ref_rows)].copy(), whole[np.sort(query_rows)].copy()
    query.obs[KEY] = query.obs[KEY].astype(str).replace({"CD34+": QUERY_ONLY}).astype("category")
    reference.write_h5ad(folder / "reference.h5ad")
    query.write_h5ad(folder / "query.h5ad")
    return folder / "reference.h5ad", folder / "query.h5ad"


def _params(cache: str) -> RunParams:
    return RunParams(model="geneformer", device="cpu", cache_dir=cache)


def _shard_times(run_dir: str) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(Path(run_dir, "shards").glob("*.npy"))}


@pytest.mark.slow
def test_annotate_the_sample_from_its_other_half(halves: tuple[Path, Path], fixture_cache: str, tmp_path: Path) -> None:
    reference, query = halves
    # the reference half's smallest class has 4 cells: 4 folds (the default 5 is E703, tested below)
    params = AnnotateParams(label_key=KEY, classifier="logreg", cv_folds=4)
    result = annotate(query, reference, _params(fixture_cache), params, tmp_path)
    run_dir = Path(result.query.run_dir)
    assert run_dir.parent.name == "query" and result.reference.run_dir != result.query.run_dir
    assert (result.reference.shards_embedded, result.query.shards_embedded) == (1, 1)

    # the outputs: annotations.h5ad (query obs + predictions), annotation.json (= the result), annotation.html
    saved = AnnotationResult.model_validate_json((run_dir / ANNOTATION_JSON).read_text())
    assert saved == result
    assert result.classifier == "StandardScaler -> LogisticRegression"
    assert result.hyperparameters["logisticregression__C"] == 1.0 and result.sklearn_version
    labels = ad.read_h5ad(query).obs
    out = ad.read_h5ad(run_dir / ANNOTATIONS)
    assert list(out.obs_names) == list(labels.index) and KEY in out.obs
    predicted, confidence = out.obs[f"predicted_{KEY}"].astype(str), out.obs[f"predicted_{KEY}_confidence"]
    probabilities = out.obsm[f"predicted_{KEY}_probabilities"]
    classes = list(out.uns[f"predicted_{KEY}_classes"])
    assert classes == result.classes == sorted(set(ad.read_h5ad(reference).obs[KEY].astype(str)))
    assert probabilities.shape == (out.n_obs, len(classes))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(confidence, probabilities.max(axis=1), atol=1e-6)
    low = confidence.to_numpy() < params.confidence_threshold
    assert (predicted[low] == UNKNOWN).all()
    assert (predicted[~low].to_numpy() == np.asarray(classes)[probabilities[~low].argmax(axis=1)]).all()
    assert out.uns["annotation"]["confidence_threshold"] == 0.5 and dict(Counter(predicted)) == result.predicted_counts

    # held-out scores of the reference, and the query scored against its own labels
    assert result.reference_cv.folds == 4 and result.reference_cv.cells == 350
    assert 0 < result.reference_cv.accuracy <= 1 and 0 < result.reference_cv.macro_f1 <= 1
    scores = result.query_scores
    assert scores is not None and scores.cells == out.n_obs
    truth = labels[KEY].astype(str)
    majority = truth.value_counts().iloc[0] / len(truth)  # measured: always guessing the most frequent label
    assert scores.majority_class_rate == pytest.approx(majority, abs=1e-4)
    assert scores.accuracy == pytest.approx(float((predicted.to_numpy() == truth.to_numpy()).mean()), abs=1e-4)
    assert scores.accuracy > majority, (scores.accuracy, majority)
    assert scores.labels_not_in_reference == {QUERY_ONLY: int((truth == QUERY_ONLY).sum())}
    assert any(QUERY_ONLY in w for w in result.warnings)
    assert scores.per_class[QUERY_ONLY].recall == 0 and set(scores.per_class) >= set(classes)
    assert np.asarray(scores.confusion).sum() == out.n_obs
    page = (run_dir / ANNOTATION_HTML).read_text()
    assert page.count('src="data:image/png;base64,') == 4  # confusion, confidence, composition, scatter
    assert QUERY_ONLY in page and "FIXTURE" in page and "LogisticRegression" in page

    # a second call (the CLI, another classifier) embeds nothing: both runs are reused by their run keys
    shards = {run: _shard_times(run) for run in (result.reference.run_dir, result.query.run_dir)}
    argv = ["annotate", str(query), "--reference", str(reference), "--label-key", KEY, "--model", "geneformer",
            "--device", "cpu", "--cache-dir", fixture_cache, "--out", str(tmp_path), "--cv-folds", "4"]  # fmt: skip
    done = CliRunner().invoke(app, argv)
    assert done.exit_code == 0, done.output
    assert "reusing" in (run_dir / "annotate.log").read_text()  # the details, off the console
    again = AnnotationResult.model_validate_json((run_dir / ANNOTATION_JSON).read_text())
    assert again.classifier == "KNeighborsClassifier" and again.hyperparameters["n_neighbors"] == 15
    assert (again.reference.shards_embedded, again.query.shards_embedded) == (0, 0)
    assert (again.reference.shards_reused, again.query.shards_reused) == (1, 1)
    assert {run: _shard_times(run) for run in shards} == shards
    assert again.query_scores is not None and again.query_scores.accuracy_without_threshold > majority

    # the same call once more: the annotation itself is current, nothing is rewritten
    written = {name: (run_dir / name).stat().st_mtime_ns for name in (ANNOTATIONS, ANNOTATION_JSON, ANNOTATION_HTML)}
    assert CliRunner().invoke(app, argv).exit_code == 0
    assert {name: (run_dir / name).stat().st_mtime_ns for name in written} == written
    drop = {"per_class", "confusion", "confusion_labels", "confusion_predicted"}
    cv = [result.reference_cv.model_dump(), again.reference_cv.model_dump()]
    print(json.dumps({"logreg": scores.model_dump(exclude=drop), "knn": again.query_scores.model_dump(exclude=drop),
                      "reference_cv": cv}))  # fmt: skip


# ---- bad references: a coded error before anything is embedded -------------------------------------------------


def _error(query: Path, reference: Path, cache: str, out: Path, **params: object) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        annotate(query, reference, _params(cache), AnnotateParams(**params), out)  # type: ignore[arg-type]
    assert not any(out.rglob("*.npy")), "nothing may be embedded before the reference's labels are checked"
    return caught.value


def test_label_column_missing(halves: tuple[Path, Path], fixture_cache: str, tmp_path: Path) -> None:
    reference, query = halves
    error = _error(query, reference, fixture_cache, tmp_path, label_key="celltype")
    assert error.code == "E701" and "'celltype'" in error.message and "cell_type" in error.message
    # the CLI prints it as code, problem and fix, exit 2, no traceback
    done = CliRunner().invoke(app, ["annotate", str(query), "--reference", str(reference), "--label-key", "celltype",
                                    "--cache-dir", fixture_cache, "--out", str(tmp_path)])  # fmt: skip
    assert done.exit_code == 2 and "error E701" in done.output and "fix" in done.output, done.output
    assert "Traceback" not in done.output


def test_class_too_small_for_the_folds(halves: tuple[Path, Path], fixture_cache: str, tmp_path: Path) -> None:
    reference, query = halves
    error = _error(query, reference, fixture_cache, tmp_path, label_key=KEY)  # 5 folds; the smallest class has 4
    assert error.code == "E703" and "'CD4+/CD45RA+/CD25- Naive T' (4 cells)" in error.message
    assert "at least 5 cells" in error.message and "--cv-folds 4" in error.hint


def test_one_class_only(halves: tuple[Path, Path], sample_h5ad: Path, fixture_cache: str, tmp_path: Path) -> None:
    tiny = ad.read_h5ad(sample_h5ad)[:20].copy()
    tiny.obs[KEY] = "T cell"
    tiny.obs.loc[tiny.obs_names[:3], KEY] = UNKNOWN  # `unknown` and missing labels are unlabelled, not a class
    tiny.write_h5ad(tmp_path / "one_class.h5ad")
    error = _error(halves[1], tmp_path / "one_class.h5ad", fixture_cache, tmp_path / "out", label_key=KEY)
    assert error.code == "E702" and "one class only ('T cell', 17 cells)" in error.message


def test_reference_of_another_kind(halves: tuple[Path, Path], fixture_cache: str, tmp_path: Path) -> None:
    fasta = tmp_path / "reference.fa"
    fasta.write_text(">a\nACGT\n>b\nACGA\n")
    error = _error(halves[1], fasta, fixture_cache, tmp_path / "out", label_key=KEY)
    assert error.code == "E704" and "cells" in error.message and "records" in error.message


def test_reference_labels_count_only_labelled_cells() -> None:
    import pandas as pd

    table = pd.DataFrame({KEY: ["a", "a", "b", "b", None, "", "Unknown", "a"]})
    assert check_reference_labels(table, KEY, folds=2) == Counter({"a": 3, "b": 2})
    with pytest.raises(ConfigError, match=r"'b' \(2 cells\)"):
        check_reference_labels(table, KEY, folds=3)
