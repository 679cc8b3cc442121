"""Plan, store and quality-gate logic that needs no model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from helical_airflow.plan import run_key, shard_ranges
from helical_airflow.quality import assess
from helical_airflow.spec import InputSummary, RunParams
from helical_airflow.store import save_npy, write_json


@pytest.mark.parametrize("n_cells,size", [(700, 250), (700, 700), (1, 1000), (1000, 1), (999, 100)])
def test_shards_cover_every_row_once_in_order(n_cells: int, size: int) -> None:
    shards = shard_ranges(n_cells, size)
    covered = np.concatenate([np.arange(s.start, s.stop) for s in shards])
    assert covered.tolist() == list(range(n_cells))
    assert all(0 < s.cells <= size for s in shards)
    assert [s.index for s in shards] == list(range(len(shards)))


def _summary(sha: str = "a" * 64) -> InputSummary:
    return InputSummary(
        path="/x.h5ad",
        sha256=sha,
        size_bytes=1,
        n_cells=10,
        n_genes=5,
        x_source="X",
        x_format="csr",
        dtype="int32",
        gene_id_kind="symbol",
        genes_in_vocab=5,
        vocab_overlap=1.0,
    )


def test_run_key_depends_on_what_changes_the_embeddings_and_not_on_the_cache_path() -> None:
    base = RunParams(model="geneformer", precision="fp32", batch_size=8, engine="helical")
    key = run_key(_summary(), base, "w1")
    assert key == run_key(_summary(), base.model_copy(update={"cache_dir": "/elsewhere"}), "w1")
    different = [
        run_key(_summary("b" * 64), base, "w1"),
        run_key(_summary(), base, "w2"),
        run_key(_summary(), base.model_copy(update={"model": "scgpt"}), "w1"),
        run_key(_summary(), base.model_copy(update={"shard_size": 7}), "w1"),
        run_key(_summary(), base.model_copy(update={"precision": "bf16"}), "w1"),
        run_key(_summary(), base.model_copy(update={"engine": "fast"}), "w1"),
        run_key(_summary(), base.model_copy(update={"layer": "counts"}), "w1"),
        run_key(_summary(), base.model_copy(update={"options": {"species": "mouse"}}), "w1"),
    ]
    assert key not in different and len(set(different)) == len(different)


def test_quality_passes_spread_finite_embeddings() -> None:
    x = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    report = assess(x, expected_cells=50)
    assert report.passed and report.problems == []
    assert -0.2 < report.mean_pairwise_cosine < 0.2


@pytest.mark.parametrize(
    "make,expected_cells,problem",
    [
        (lambda x: np.where(np.arange(50)[:, None] == 3, np.nan, x), 50, "NaN or infinite"),
        (lambda x: np.where(np.arange(50)[:, None] == 7, np.inf, x), 50, "NaN or infinite"),
        (lambda x: x, 51, "shape"),
        (lambda x: np.repeat(x[:1], 50, axis=0), 50, "collapsed"),
        (lambda x: x[:1] * 1000 + x * 1e-3, 50, "collapsed"),
    ],
)
def test_quality_catches_bad_embeddings(make, expected_cells: int, problem: str) -> None:
    x = np.random.default_rng(1).normal(size=(50, 8))
    report = assess(make(x), expected_cells=expected_cells)
    assert not report.passed
    assert any(problem in p for p in report.problems), report.problems


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "shards" / "0.npy"
    save_npy(target, np.arange(6, dtype=np.float32).reshape(2, 3))
    save_npy(target, np.ones((4, 3), dtype=np.float32))
    assert np.load(target).shape == (4, 3)
    write_json(tmp_path / "r.json", {"a": 1})
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": 1}
    assert sorted(p.name for p in target.parent.iterdir()) == ["0.npy"]


def test_a_process_killed_while_writing_leaves_the_old_file_intact(tmp_path: Path) -> None:
    """SIGKILL in the middle of a large write: the target keeps its previous complete content."""
    target = tmp_path / "big.npy"
    save_npy(target, np.zeros((3, 3), dtype=np.float32))
    script = textwrap.dedent(
        f"""
        import numpy as np, os, signal
        from helical_airflow import store
        real_save = np.save
        def save_then_die(fh, arr):
            fh.write(b"partial")
            fh.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        np.save = save_then_die
        store.save_npy(__import__("pathlib").Path({str(target)!r}), np.ones((1000, 1000)))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], env={**os.environ}, capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    assert np.load(target).shape == (3, 3)


def test_a_file_where_the_run_folder_goes_is_e209_not_a_traceback(tmp_path: Path) -> None:
    """outputs/<input name>/<run key>: a file outputs/<input name> (run_sample.sh once wrote its RNA input there)."""
    from helical_airflow.errors import ConfigError
    from helical_airflow.plan import make_plan
    from helical_airflow.spec import RunParams
    from helical_airflow.validate import validate_input

    fasta = tmp_path / "in" / "x.fa"
    fasta.parent.mkdir()
    fasta.write_text(">a\nACGT\n>b\nGGCA\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "x").write_text("in the way")  # the dataset is the name less its suffix (modality.dataset_name)
    from helical_airflow.models import fixture

    cache = tmp_path / "cache"
    fixture.build_fixture(cache, families=["hyena_dna"])
    params = RunParams(model="hyena_dna", cache_dir=str(cache))
    summary = validate_input(str(fasta), "hyena_dna", None, str(cache), options={})
    with pytest.raises(ConfigError) as err:
        make_plan(summary, params, out)
    assert err.value.code == "E209" and str(out / "x") in err.value.message

