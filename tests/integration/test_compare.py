"""`compare`: three single-cell families (fixture weights, helical's real code) and the PCA baseline scored on the
same cells with scib-metrics, ranked, with each model's cost; a second call reuses every run and the comparison;
a model of another modality than the input is refused before anything is embedded."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split
from typer.testing import CliRunner

from helical_airflow import compare
from helical_airflow.cli import app
from helical_airflow.spec import RunParams
from helical_airflow.statsd_bridge.lines import parse_line
from helical_airflow.statsd_bridge.mapping import Mapper

REPO = Path(__file__).resolve().parents[2]
#: the three cheapest single-cell fixture families on 200 cells (measured, user CPU seconds of one `compare` with
#: all three: 80 s including scoring; uce and nicheformer load slower)
MODELS = ("geneformer", "scgpt", "genept")
KEY = "cell_type"


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory, sample_h5ad: Path) -> Path:
    """200 cells of the sample, stratified by cell type (seeded): every type stays, the embedding runs stay short."""
    whole = ad.read_h5ad(sample_h5ad)
    rows, _ = train_test_split(np.arange(whole.n_obs), train_size=200, stratify=whole.obs[KEY], random_state=0)
    path = tmp_path_factory.mktemp("compare") / "pbmc200.h5ad"
    whole[np.sort(rows)].copy().write_h5ad(path)
    return path


@pytest.fixture(scope="module")
def compared(small: Path, fixture_cache: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One `helical-airflow compare` of the three families (CLI, in process): its output root and console."""
    out = tmp_path_factory.mktemp("compared") / "out"
    args = ["compare", str(small), "--models", ",".join(MODELS), "--label-key", KEY, "--device", "cpu",
            "--cache-dir", fixture_cache, "--out", str(out)]  # fmt: skip
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    return out, done.output


def _result(output: str) -> compare.ComparisonResult:
    return compare.ComparisonResult.model_validate_json(Path(output.strip().splitlines()[-1]).read_text())


@pytest.mark.slow
def test_compare_ranks_three_families_and_pca_then_reuses_every_run(
    compared: tuple[Path, str], small: Path, fixture_cache: str
) -> None:
    out, output = compared
    assert "carries no biology" in " ".join(output.split())  # said loudly on the console, once the plan is known
    result = _result(output)

    assert sorted(row.name for row in result.rows) == sorted([*MODELS, compare.BASELINE])
    assert [row.rank for row in result.rows] == [1, 2, 3, 4]
    assert [row.total for row in result.rows] == sorted((row.total for row in result.rows), reverse=True)
    expected = {"Isolated labels", "Leiden NMI", "Leiden ARI", "Silhouette label", "cLISI"}
    assert set(result.metrics["Bio conservation"]) == expected
    for row in result.rows:
        assert set(row.metrics) == expected
        assert all(math.isfinite(v) for v in [*row.metrics.values(), row.bio_conservation, row.total])
        assert row.batch_correction is None  # no batch key: bio conservation alone ranks
        if row.baseline:
            assert row.cost is None and row.run_key is None
        else:
            assert row.cost and row.cost.embedding_seconds > 0 and row.cost.cells_per_second > 0
            assert row.cost.device == "cpu" and row.cost.peak_rss_mb > 0 and row.fixture
    assert result.scored_cells == 200 and not result.sampled and result.fixture
    assert compare.NO_BIOLOGY in result.warnings
    folder = Path(result.out_dir)
    assert folder.parent.name == "compare" and folder.name == result.comparison_key
    page = (folder / compare.COMPARISON_HTML).read_text()
    assert "carries no biology" in page and "class='ranked'" in page and page.count("<img") == 2
    # the scores as Prometheus metrics: every line maps to helical_compare_score with the row's labels
    mapper = Mapper.from_file(REPO / "monitoring" / "statsd" / "mapping.yml")
    for line in compare.score_lines(result):
        (event,), errors = parse_line(line)
        match = mapper.lookup(event.name, event.type)
        assert errors == [] and match is not None and match.name == "helical_compare_score", line
        assert match.labels["comparison_key"] == result.comparison_key and match.labels["dataset"] == "pbmc200"

    # again, through the library: nothing embedded, the same comparison returned (its key holds every run key)
    shards = [p for row in result.rows if row.run_dir for p in Path(row.run_dir).glob("shards/*.npy")]
    stamps = {p: p.stat().st_mtime_ns for p in shards}
    assert len(stamps) == len(MODELS)
    params = compare.CompareParams(models=list(MODELS), label_key=KEY)
    again, embedded = compare.compare(
        small, params, lambda m: RunParams(model=m, device="cpu", cache_dir=fixture_cache), out.resolve()
    )
    assert embedded == dict.fromkeys(MODELS, 0)
    assert again.comparison_key == result.comparison_key and again.created_at == result.created_at
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


@pytest.mark.slow
def test_comparison_is_an_mlflow_parent_run_with_a_child_per_model(
    compared: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    pytest.importorskip("mlflow", reason="the tracking extra brings mlflow")
    from mlflow.tracking import MlflowClient
    from stack_helpers import real_mlflow_server  # tests/stack_helpers.py

    result = _result(compared[1])
    cplan = compare.load_comparison_plan(Path(result.out_dir) / compare.COMPARISON_PLAN)
    down = compare.score(cplan, tracking_uri="http://127.0.0.1:9")  # nothing listens: a warning, not an error
    assert down.tracking and down.tracking["status"] == "untracked"
    with real_mlflow_server(tmp_path_factory) as uri:
        tracked = compare.score(cplan, tracking_uri=uri)  # the comparison is current: only tracked now
        assert tracked.tracking and tracked.tracking["status"] == "tracked"
        client = MlflowClient(tracking_uri=uri)
        parent = client.get_run(tracked.tracking["mlflow_run_id"])
        assert parent.data.tags["comparison_key"] == result.comparison_key
        children = client.search_runs(
            [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
        )
        assert sorted(c.data.tags["model"] for c in children) == sorted([*MODELS, compare.BASELINE])
        for child in children:
            row = next(r for r in result.rows if r.name == child.data.tags["model"])
            assert child.data.metrics["total"] == pytest.approx(row.total)
            assert child.data.metrics["rank"] == row.rank
        assert compare.score(cplan, tracking_uri=uri).tracking == tracked.tracking  # tracked once


def test_a_single_cell_model_on_a_fasta_is_refused_before_anything_is_embedded(tmp_path: Path) -> None:
    out = tmp_path / "out"
    fasta = REPO / "data" / "sample_dna.fa"
    done = CliRunner().invoke(app, ["compare", str(fasta), "--models", "hyena_dna,scgpt", "--out", str(out)])
    said = " ".join(done.output.split())
    assert done.exit_code == 2
    assert "error E1001" in said and "scgpt (cells)" in said and "(those that fit: hyena_dna)" in said
    assert not out.exists()  # nothing planned, nothing embedded
    unknown = CliRunner().invoke(app, ["compare", str(fasta), "--models", "hyena_dna,no-such-model", "--out", str(out)])
    assert unknown.exit_code == 2 and "error E201" in unknown.output
    twice = CliRunner().invoke(app, ["compare", str(fasta), "--models", "hyena_dna,hyena_dna", "--out", str(out)])
    assert twice.exit_code == 2 and "error E1004" in twice.output and not out.exists()


def test_stratified_sample_keeps_every_label_and_is_seeded() -> None:
    labels = np.array(["a"] * 900 + ["b"] * 95 + ["rare"] * 5)
    picked = compare.stratified_sample(labels, 100, seed=3)
    assert len(picked) == 100 and np.all(np.diff(picked) > 0)
    assert {k: int((labels[picked] == k).sum()) for k in ("a", "b", "rare")} == {"a": 90, "b": 9, "rare": 1}
    assert np.array_equal(picked, compare.stratified_sample(labels, 100, seed=3))
    assert not np.array_equal(picked, compare.stratified_sample(labels, 100, seed=4))
    assert np.array_equal(compare.stratified_sample(labels[:50], 100, seed=3), np.arange(50))


def test_cells_are_labelled_by_the_rule_annotation_and_fine_tuning_use() -> None:
    """labels.py's rule: missing, empty, 'unknown', 'nan', 'none' (any case, spaces stripped) are left out; a
    categorical with a missing value and numbers (cluster ids) are read as text."""
    column = pd.Series(["B cell", " T cell ", None, "", "Unknown", "nan", "NONE", 3, np.nan], dtype=object)
    text, labelled = compare.labelled_cells(column)
    assert labelled.tolist() == [True, True, False, False, False, False, False, True, False]
    assert text[labelled].tolist() == ["B cell", "T cell", "3"]
    categories = pd.Series(pd.Categorical(["a", None, "unknown", "b"]))
    text, labelled = compare.labelled_cells(categories)
    assert labelled.tolist() == [True, False, False, True] and text[labelled].tolist() == ["a", "b"]


def test_the_dags_plan_step_refuses_too_and_plans_the_workflows_own_run_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fixture_cache: str, sample_h5ad: Path
) -> None:
    pytest.importorskip("airflow", reason="the airflow extra brings the DAG's steps' exceptions")
    from airflow.sdk.exceptions import AirflowFailException

    from helical_airflow import airflow_tasks

    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    shutil.copy(REPO / "data" / "sample_dna.fa", data)
    shutil.copy(sample_h5ad, data / "pbmc.h5ad")
    monkeypatch.setenv("HELICAL_AIRFLOW_DATA_DIR", str(data))
    monkeypatch.setenv("HELICAL_AIRFLOW_OUTPUT_DIR", str(out))
    monkeypatch.setenv("HELICAL_AIRFLOW_CACHE_DIR", fixture_cache)
    with pytest.raises(AirflowFailException, match="E1001"):
        airflow_tasks.plan_comparison({"input_path": "sample_dna.fa", "models": ["hyena_dna", "geneformer"]})
    assert not out.exists()  # refused before anything was planned

    planned = airflow_tasks.plan_comparison(
        {"input_path": "pbmc.h5ad", "models": ["geneformer"], "device": "cpu", "shard_size": 350, "label_key": None}
    )
    (conf,) = planned["confs"]  # what the trigger hands helical_model_workflow
    summary = airflow_tasks.validate_input(conf)
    workflow = airflow_tasks.plan_shards(conf, summary)
    cplan = compare.load_comparison_plan(planned["plan_path"])
    assert workflow["run_key"] == cplan.runs[0].run_key and conf["label_key"] == KEY  # guessed, passed on


@pytest.mark.slow
def test_a_batch_key_adds_scibs_batch_correction_and_weights_it_0_4() -> None:
    """compare.benchmark with batches (the path a --batch-key takes), on 120 synthetic cells: every batch-correction
    metric (BRAS, iLISI, kBET, graph connectivity, PCR comparison) finite, and Total = 0.6 bio + 0.4 batch. An
    embedding that keeps the batch effect scores lower on batch correction than one without it."""
    rng = np.random.default_rng(0)
    labels = np.repeat(["a", "b", "c"], 40)
    batches = np.tile(["x", "y"], 60)
    signal = np.eye(3)[np.searchsorted(["a", "b", "c"], labels)] * 4
    clean = np.hstack([signal, rng.normal(size=(120, 5))]).astype(np.float32)
    shifted = clean + (batches == "y")[:, None] * 6.0
    results, metrics = compare.benchmark({compare.BASELINE: shifted, "clean": clean}, labels, batches, seed=0)
    assert set(metrics["Batch correction"]) >= {"iLISI", "KBET", "Graph connectivity", "PCR comparison"}
    for name in (compare.BASELINE, "clean"):
        row = results.loc[name]
        assert all(math.isfinite(row[m]) for names in metrics.values() for m in names), row
        assert row["Total"] == pytest.approx(0.6 * row["Bio conservation"] + 0.4 * row["Batch correction"])
    assert results.loc["clean", "Batch correction"] > results.loc[compare.BASELINE, "Batch correction"]
