"""`annotate --classifier FOLDER`: a fine-tuned Geneformer (fixture weights, helical's real code) predicts a query
shard by shard (a `predict-shard` process of the local launcher) into the reference path's files; the second call
(the CLI, --model left out) reuses everything; a model that cannot read the run (another model, other weights,
another vocabulary) and a classifier given together with a reference stop with coded errors before anything is
embedded. The fine-tuned folder's report.html shows the
training curves and a validation confusion matrix that sums to the validation split."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import threading
import time
from pathlib import Path

import anndata as ad
import numpy as np
import psutil
import pytest
from typer.testing import CliRunner

from helical_airflow import annotate_finetuned
from helical_airflow.annotate import ANNOTATION_HTML, ANNOTATION_JSON, ANNOTATIONS, UNKNOWN, AnnotationResult
from helical_airflow.cli import app
from helical_airflow.errors import ConfigError
from helical_airflow.finetune import RESULT_FILE, FineTuneParams, finetune, load_classifier
from helical_airflow.finetune_report import REPORT_FILE
from helical_airflow.launchers import LaunchError, launch, predict
from helical_airflow.launchers.base import read_results
from helical_airflow.launchers.jobs import prediction_file
from helical_airflow.pipeline import prepare
from helical_airflow.spec import RunParams

KEY = "cell_type"
QUERY_ONLY = "CD34+ progenitor"  # the query's name for CD34+: a label the fine-tuned model never learnt


@pytest.fixture(scope="module")
def tuned(sample_h5ad: Path, fixture_cache: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    params = FineTuneParams(model="geneformer", label_key=KEY, device="cpu", cache_dir=fixture_cache, epochs=1,
                            learning_rate=1e-2, max_train_cells=16, validation_fraction=0.3, batch_size=8,
                            shard_size=350)  # fmt: skip
    return finetune(sample_h5ad, params, tmp_path_factory.mktemp("tuned")).folder


@pytest.fixture(scope="module")
def query(sample_h5ad: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """29 cells of the sample (every 25th, and its first CD34+ cell, renamed: a label the model lacks)."""
    whole = ad.read_h5ad(sample_h5ad)
    first_cd34 = int(np.flatnonzero(whole.obs[KEY].astype(str) == "CD34+")[0])
    cells = whole[sorted({*range(0, whole.n_obs, 25), first_cd34})[:30]].copy()
    cells.obs[KEY] = cells.obs[KEY].astype(str).replace({"CD34+": QUERY_ONLY}).astype("category")
    path = tmp_path_factory.mktemp("query") / "query.h5ad"
    cells.write_h5ad(path)
    return path


def _run(cache: str) -> RunParams:
    return RunParams(model="geneformer", device="cpu", cache_dir=cache, shard_size=10)


def test_the_finetuned_folder_has_a_report(tuned: Path) -> None:
    result = json.loads((tuned / RESULT_FILE).read_text())
    validation = result["validation"]
    matrix = np.asarray(validation["confusion"])
    assert matrix.shape == (len(result["labels"]),) * 2 and validation["labels"] == result["labels"]
    assert matrix.sum() == result["split"]["val_cells"]  # every validation cell, once
    assert matrix.sum(axis=1).tolist() == [result["split"]["val_per_class"].get(k, 0) for k in result["labels"]]
    assert {k: v[3] for k, v in validation["per_class"].items()} == {
        k: result["split"]["val_per_class"].get(k, 0) for k in result["labels"]}  # fmt: skip
    # the kept epoch's weights, scored again: the accuracy the history recorded for that epoch
    assert validation["accuracy"] == pytest.approx(result["best"]["val_accuracy"], abs=1e-4)
    assert validation["accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum(), abs=1e-4)
    assert result["vocabulary_sha256"] and len(result["vocabulary_sha256"]) == 64
    page = (tuned / REPORT_FILE).read_text()
    assert page.count('src="data:image/png;base64,') == 2  # the curves, the confusion matrix
    assert "Training curves" in page and f"Validation ({result['split']['val_cells']} cells" in page
    assert all(f"<td>{label}</td>" in page for label in result["labels"]) and "FIXTURE" in page


def test_annotate_with_a_finetuned_folder(tuned: Path, query: Path, fixture_cache: str, tmp_path: Path) -> None:
    result = annotate_finetuned.annotate_with_classifier(query, tuned, _run(fixture_cache), tmp_path)
    run_dir = Path(result.query.run_dir)
    assert result.reference is None and result.reference_cv is None and result.finetuned is not None
    assert result.finetuned.folder == str(tuned) and result.params.classifier == "finetuned"
    assert sorted(p.name for p in (run_dir / "predictions" / result.finetuned.finetune_key).iterdir()) == [
        "00000.npy",
        "00001.npy",
        "00002.npy",
    ]  # fmt: skip  (29 cells, shards of 10)

    # the same columns as the reference path, and the very probabilities the model gives the whole query at once
    out = ad.read_h5ad(run_dir / ANNOTATIONS)
    classifier = load_classifier(tuned, cache_dir=fixture_cache)
    cells = ad.read_h5ad(query)
    expected = classifier.predict_proba(cells)
    probabilities = out.obsm[f"predicted_{KEY}_probabilities"]
    known = ~np.isnan(expected).any(axis=1)
    np.testing.assert_allclose(probabilities[known], expected[known], atol=1e-5)
    assert list(out.uns[f"predicted_{KEY}_classes"]) == classifier.labels == result.classes
    predicted, confidence = out.obs[f"predicted_{KEY}"].astype(str), out.obs[f"predicted_{KEY}_confidence"].to_numpy()
    low = confidence < 0.5
    best = np.asarray(classifier.labels)[np.nan_to_num(expected).argmax(axis=1)]
    assert (predicted[low] == UNKNOWN).all() and (predicted[~low].to_numpy() == best[~low]).all()
    assert result.cells_without_known_gene == int((~known).sum())
    saved = AnnotationResult.model_validate_json((run_dir / ANNOTATION_JSON).read_text())
    assert saved == result and result.query_scores is not None and result.query_scores.cells == cells.n_obs
    assert result.query_scores.labels_not_in_reference == {QUERY_ONLY: int((cells.obs[KEY] == QUERY_ONLY).sum())}
    assert any(QUERY_ONLY in w and "fine-tuned model" in w for w in result.warnings)
    page = (run_dir / ANNOTATION_HTML).read_text()
    assert page.count('src="data:image/png;base64,') == 4  # confusion, confidence, composition, scatter
    assert "fine-tuned model on its validation split" in page and result.finetuned.finetune_key in page

    # the CLI, --model left out (it comes from the folder): everything is current, nothing is rewritten
    written = {p: p.stat().st_mtime_ns for p in [*run_dir.glob("predictions/*/*.npy"), run_dir / ANNOTATIONS]}
    argv = ["annotate", str(query), "--classifier", str(tuned), "--device", "cpu", "--cache-dir", fixture_cache,
            "--shard-size", "10", "--out", str(tmp_path), "--launcher", "local"]  # fmt: skip
    done = CliRunner().invoke(app, argv)
    assert done.exit_code == 0, done.output
    assert {p: p.stat().st_mtime_ns for p in written} == written

    # a killed annotation redoes only its missing shard
    (run_dir / ANNOTATION_JSON).unlink()
    missing = next(iter(run_dir.glob("predictions/*/00001.npy")))
    missing.unlink()
    again = annotate_finetuned.annotate_with_classifier(query, tuned, _run(fixture_cache), tmp_path)
    assert again.predicted_counts == result.predicted_counts and missing.is_file()
    assert {p: p.stat().st_mtime_ns for p in written if p.suffix == ".npy" and p != missing} == {
        p: t for p, t in written.items() if p.suffix == ".npy" and p != missing}  # fmt: skip


def _edited(folder: Path, tmp_path: Path, **changes: object) -> Path:
    copy = tmp_path / "edited"
    shutil.copytree(folder, copy)
    result = json.loads((copy / RESULT_FILE).read_text())
    (copy / RESULT_FILE).write_text(json.dumps({**result, **changes}))
    return copy


def test_a_classifier_that_cannot_read_the_run(tuned: Path, query: Path, fixture_cache: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(ConfigError) as other_model:
        annotate_finetuned.annotate_with_classifier(query, tuned, _run(fixture_cache).model_copy(
            update={"model": "scgpt"}), out)  # fmt: skip
    assert other_model.value.code == "E830" and "'geneformer'" in other_model.value.message
    assert "--model geneformer" in other_model.value.hint
    with pytest.raises(ConfigError) as other_weights:
        annotate_finetuned.annotate_with_classifier(query, _edited(tuned, tmp_path, weights_checksum="0" * 64),
                                                    _run(fixture_cache), out)  # fmt: skip
    assert other_weights.value.code == "E831" and "000000000000" in other_weights.value.message
    shutil.rmtree(tmp_path / "edited")
    with pytest.raises(ConfigError) as other_vocab:
        annotate_finetuned.annotate_with_classifier(query, _edited(tuned, tmp_path, vocabulary_sha256="f" * 64),
                                                    _run(fixture_cache), out)  # fmt: skip
    assert other_vocab.value.code == "E832" and "ffffffffffff" in other_vocab.value.message
    assert not list(out.glob("*/*/shards/*.npy"))  # nothing embedded
    with pytest.raises(ConfigError) as not_a_folder:
        annotate_finetuned.resolve(tmp_path)
    assert not_a_folder.value.code == "E806"


def test_classifier_and_reference_together(tuned: Path, query: Path) -> None:
    done = CliRunner().invoke(app, ["annotate", str(query), "--classifier", str(tuned), "--reference", str(query)])
    assert done.exit_code == 2 and "error E705" in done.output and "drop --reference" in done.output, done.output
    done = CliRunner().invoke(app, ["annotate", str(query), "--label-key", KEY])
    assert done.exit_code == 2 and "error E706" in done.output, done.output
    done = CliRunner().invoke(app, ["annotate", str(query), "--reference", str(query)])
    assert done.exit_code == 2 and "error E708" in done.output, done.output
    assert re.search(r"fix: .*--label-key", done.output)


def _predict_processes(plan_file: str) -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True)
            if "predict-shard" in (cmd := p.cmdline()) and plan_file in cmd]  # fmt: skip


def test_predictions_run_through_the_launcher(tuned: Path, query: Path, fixture_cache: str, tmp_path: Path) -> None:
    """The predict job of the local launcher (a `predict-shard` process, what annotate --classifier and the DAG's
    predict task launch) writes the probabilities predict_shard gives in this process; a second launch reuses
    every shard; a killed predict process and a shard missing after exit 0 are retryable errors."""
    plan = prepare(query, _run(fixture_cache), tmp_path / "out")  # predictions read the input, not the embeddings
    plan_file = str(plan.plan_file)
    classifier = load_classifier(tuned, cache_dir=fixture_cache)
    key = classifier.result.finetune_key
    job = predict(str(tuned), key)
    lines: list[str] = []
    done = launch("local", plan_file, [0, 1, 2], job=job, emit=lines.append)
    files = [prediction_file(plan, key, i) for i in range(len(plan.shards))]
    assert [(r["index"], r["reused"], r["path"]) for r in done] == [(i, False, str(f)) for i, f in enumerate(files)]
    assert sum(line.startswith("launching: ") and "predict-shard" in line for line in lines) == 1, lines[-20:]

    # the same probabilities as the shard predicted in this process (another run folder: nothing reused)
    here = plan.model_copy(update={"out_dir": str(tmp_path / "here")})
    for index, launched in enumerate(files):
        mine, reused = annotate_finetuned.predict_shard(here, index, classifier)
        assert not reused
        np.testing.assert_allclose(np.load(launched), np.load(mine), atol=1e-6, equal_nan=True)

    # a second launch: every shard reused, nothing rewritten
    written = {f: f.stat().st_mtime_ns for f in files}
    again = launch("local", plan_file, [0, 1, 2], job=job, emit=lambda _: None)
    assert [r["reused"] for r in again] == [True, True, True] and {f: f.stat().st_mtime_ns for f in files} == written

    # shard 1 gone, its predict process killed (out of memory, a node lost): E511, retried by Airflow
    files[1].unlink()
    killer = threading.Thread(target=_kill_first_predict_process, args=(plan_file,), daemon=True)
    killer.start()
    with pytest.raises(LaunchError) as killed:
        launch("local", plan_file, [1], job=job, emit=lambda _: None)
    killer.join(timeout=60)
    assert killed.value.code == "E511" and killed.value.retryable and killed.value.process_exit_code == -9
    # the process exited 0 without writing shard 1 (another output folder, an old runner): E512, retried
    with pytest.raises(LaunchError) as missing:
        read_results(plan_file, [0, 1, 2], job)
    assert missing.value.code == "E512" and missing.value.retryable and "shard(s) [1]" in missing.value.message


def _kill_first_predict_process(plan_file: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = _predict_processes(plan_file)
        if found:
            os.killpg(found[0].pid, signal.SIGKILL)  # its own process group (the launcher's start_new_session)
            return
        time.sleep(0.05)
