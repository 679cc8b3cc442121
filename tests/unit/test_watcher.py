"""The incoming-folder watcher: parameters from a sidecar or the folder, validated by the workflow DAG's own
Params; invalid parameters and failed runs park the file in incoming/failed/ with the error beside it."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("airflow")

from helical_airflow import watcher  # noqa: E402

DAG_FILE = Path(__file__).resolve().parents[2] / "airflow" / "dags" / "helical_model_workflow.py"


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sample_h5ad: Path) -> Path:
    monkeypatch.setenv("HELICAL_AIRFLOW_DATA_DIR", str(tmp_path))
    (tmp_path / "incoming").mkdir()
    return tmp_path


def _drop(path: Path, source: Path, params: dict | str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, path)
    if params is not None:
        path.with_suffix(".json").write_text(params if isinstance(params, str) else json.dumps(params))
    old = time.time() - 60  # finished copying a while ago
    for p in (path, path.with_suffix(".json")):
        if p.exists():
            os.utime(p, (old, old))


def test_sidecar_and_folder_parameters_are_validated_and_claimed(data: Path, sample_h5ad: Path) -> None:
    incoming = data / "incoming"
    _drop(incoming / "a.h5ad", sample_h5ad, {"shard_size": 300, "layer": None, "label_key": "cell_type"})
    (incoming / "scgpt").mkdir()
    (incoming / "scgpt" / "params.json").write_text(json.dumps({"shard_size": 100, "device": "cpu"}))
    _drop(incoming / "scgpt" / "b.h5ad", sample_h5ad, {"shard_size": 200})
    _drop(incoming / "scgpt" / "c.h5ad", sample_h5ad)
    confs = {c["input_path"]: c for c in watcher.claim(DAG_FILE, min_age_s=1, wait_s=0)}
    assert confs == {
        "incoming/accepted/a.h5ad": {"shard_size": 300, "layer": None, "label_key": "cell_type",
                                     "input_path": "incoming/accepted/a.h5ad"},
        "incoming/accepted/b.h5ad": {"model": "scgpt", "shard_size": 200, "device": "cpu",
                                     "input_path": "incoming/accepted/b.h5ad"},
        "incoming/accepted/c.h5ad": {"model": "scgpt", "shard_size": 100, "device": "cpu",
                                     "input_path": "incoming/accepted/c.h5ad"},
    }  # fmt: skip
    assert (incoming / "accepted" / "a.json").is_file() and not (incoming / "a.h5ad").exists()
    assert (incoming / "scgpt" / "params.json").is_file()  # the folder's defaults stay for the next file
    assert watcher.claim(DAG_FILE, min_age_s=1, wait_s=0) == []  # nothing twice


@pytest.mark.parametrize(
    "params,why",
    [
        ({"shard_size": 0}, "shard_size"),
        ({"model": "no-such-model"}, "no-such-model"),
        ({"shards": 3}, "unknown parameter(s) ['shards']"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must hold a JSON object"),
    ],
)
def test_invalid_parameters_park_the_file_with_the_reason(data: Path, sample_h5ad: Path, params, why: str) -> None:
    incoming = data / "incoming"
    _drop(incoming / "bad.h5ad", sample_h5ad, params)
    assert watcher.claim(DAG_FILE, min_age_s=1, wait_s=0) == []
    failed = incoming / "failed"
    assert (failed / "bad.h5ad").is_file() and (failed / "bad.json").is_file()
    error = (failed / "bad.error.txt").read_text()
    assert "parameters are invalid" in error and why in error, error
    assert not (incoming / "bad.h5ad").exists()


def test_a_failed_run_moves_its_input_to_failed_with_the_error(data: Path, sample_h5ad: Path) -> None:
    accepted = data / "incoming" / "accepted"
    _drop(accepted / "x.h5ad", sample_h5ad, {"layer": "counts"})
    run = SimpleNamespace(run_id="manual__1", conf={"input_path": "incoming/accepted/x.h5ad", "layer": "counts"})
    context = {"dag_run": run, "ti": SimpleNamespace(task_id="validate_input"),
               "exception": "error E103: layers/counts not found"}  # fmt: skip
    watcher.move_failed_input(context)  # type: ignore[arg-type]
    failed = data / "incoming" / "failed"
    assert (failed / "x.h5ad").is_file() and (failed / "x.json").is_file() and not (accepted / "x.h5ad").exists()
    error = (failed / "x.error.txt").read_text()
    assert "manual__1" in error and "validate_input" in error and "E103" in error
    watcher.move_failed_input(context)  # type: ignore[arg-type]  # a second failing task of the run: no error
    other = {**context, "dag_run": SimpleNamespace(run_id="r", conf={"input_path": "sample.h5ad"})}
    watcher.move_failed_input(other)  # type: ignore[arg-type]  # not from incoming/: left alone


def test_every_supported_input_is_claimed_fasta_too(data: Path) -> None:
    """A FASTA (plain or gzip) or a table dropped in incoming/ runs like a .h5ad (issue 18: only *.h5ad was seen);
    its sidecar is `<name>.json`, the name less its whole suffix (`reads.fa.gz` -> `reads.json`)."""
    incoming = data / "incoming"
    (incoming / "hyena_dna").mkdir()
    fasta = ">a\nACGT\n>b\nGGCA\n"
    (incoming / "hyena_dna" / "reads.fa").write_text(fasta)
    (incoming / "reads2.fa.gz").write_bytes(gzip.compress(fasta.encode()))
    (incoming / "reads2.json").write_text(json.dumps({"model": "hyena_dna", "shard_size": 4}))
    (incoming / "notes.txt").write_text("not an input")
    (incoming / "big.fa.part").write_text(fasta)  # still being copied under another name
    old = time.time() - 60
    for p in incoming.rglob("*"):
        os.utime(p, (old, old))
    assert [p.name for p in watcher.pending(incoming)] == ["reads.fa", "reads2.fa.gz"]
    confs = {c["input_path"]: c for c in watcher.claim(DAG_FILE, min_age_s=1, wait_s=0)}
    assert confs == {
        "incoming/accepted/reads.fa": {"model": "hyena_dna", "input_path": "incoming/accepted/reads.fa"},
        "incoming/accepted/reads2.fa.gz": {"model": "hyena_dna", "shard_size": 4,
                                           "input_path": "incoming/accepted/reads2.fa.gz"},
    }  # fmt: skip
    assert (incoming / "accepted" / "reads2.json").is_file()
    assert sorted(p.name for p in incoming.iterdir() if p.is_file()) == ["big.fa.part", "notes.txt"]
