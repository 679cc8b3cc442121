"""Inputs and outputs in object storage, against a REAL S3 server (SeaweedFS, the `real_s3_server` session fixture):
the sample in a bucket, a run with its outputs in the bucket equal to a local run, resume from the bucket's shards,
no credential in any output or log, and coded errors for a missing object or refused credentials."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pytest

from helical_airflow import objstore
from helical_airflow.errors import HelicalAirflowError
from helical_airflow.pipeline import run
from helical_airflow.spec import RunParams

CLI = [sys.executable, "-m", "helical_airflow.cli"]
CELLS, SHARD = 60, 20  # 3 shards of the fixture Geneformer: seconds on CI's CPUs


@pytest.fixture(scope="module")
def cells_h5ad(sample_h5ad: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("s3in") / "pbmc60.h5ad"
    ad.read_h5ad(sample_h5ad)[:CELLS].copy().write_h5ad(path)
    return path


@pytest.fixture
def s3(real_s3_server: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """The server's standard AWS variables in this process (and the CLI's), a fresh object cache per test."""
    for name, value in real_s3_server.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HELICAL_AIRFLOW_OBJECT_CACHE_DIR", str(tmp_path / "objects"))
    objstore.reset()
    return real_s3_server


def upload(server: Any, local: Path, key: str) -> str:
    server.filesystem().put_file(str(local), f"{server.bucket}/{key}")
    return f"s3://{server.bucket}/{key}"


def params(cache: str) -> RunParams:
    return RunParams(model="geneformer", shard_size=SHARD, device="cpu", cache_dir=cache)


def bucket_embeddings(server: Any, run_url: str, tmp_path: Path) -> np.ndarray:
    target = tmp_path / "fetched.h5ad"
    server.filesystem().get_file(f"{run_url.removeprefix('s3://')}/embeddings.h5ad", str(target))
    return np.asarray(ad.read_h5ad(target).obsm["X_geneformer"])


@pytest.mark.slow
def test_s3_round_trip_equals_a_local_run_resumes_and_leaks_no_credential(
    s3: Any, cells_h5ad: Path, fixture_cache: str, tmp_path: Path
) -> None:
    url = upload(s3, cells_h5ad, "inputs/pbmc60.h5ad")
    out = f"s3://{s3.bucket}/cli-outputs"
    env = {**os.environ, **s3.env(), "HELICAL_AIRFLOW_OBJECT_CACHE_DIR": str(tmp_path / "objects")}
    proc = subprocess.run([*CLI, "run", url, "--out", out, "--model", "geneformer", "--cache-dir", fixture_cache,
                           "--shard-size", str(SHARD), "--device", "cpu"],
                          capture_output=True, text=True, timeout=600, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    # the run passed and is in the bucket: its local work copy is gone (a resume reads the bucket)
    assert list((tmp_path / "objects" / "work").rglob("plan.json")) == []

    local = run(cells_h5ad, params(fixture_cache), tmp_path / "local")  # the same file from the disk
    run_url = f"{out}/pbmc60/{local.run_key}"  # the run key is the content's: the same wherever the file sits
    assert run_url in proc.stdout, proc.stdout
    fs = s3.filesystem()
    names = {p.rsplit("/", 1)[-1] for p in fs.find(run_url.removeprefix("s3://"))}
    assert {"manifest.json", "embeddings.h5ad", "report.html", "run.log", "0.npy", "2.json"} <= names, names
    assert objstore.read_latest(f"{out}/pbmc60") == local.run_key
    remote = bucket_embeddings(s3, run_url, tmp_path)
    local_emb = ad.read_h5ad(tmp_path / "local" / "pbmc60" / local.run_key / "embeddings.h5ad").obsm["X_geneformer"]
    np.testing.assert_allclose(remote, local_emb, atol=1e-6, rtol=0)
    manifest = fs.cat_file(f"{run_url.removeprefix('s3://')}/manifest.json").decode()
    assert url in manifest  # the manifest names the object the input came from

    # no credential anywhere: every object in the bucket, every file of the work folder and cache, the console
    secret = s3.secret_key.encode()
    leaks = [p for p in fs.find(s3.bucket) if secret in fs.cat_file(p)]
    leaks += [str(p) for p in (tmp_path / "objects").rglob("*") if p.is_file() and secret in p.read_bytes()]
    leaks += [name for name, text in (("stdout", proc.stdout), ("stderr", proc.stderr)) if s3.secret_key in text]
    assert not leaks, leaks

    # resume: a shard lost from the bucket, the work folder gone (another machine): only that shard is redone
    run_path = run_url.removeprefix("s3://")
    kept = {i: fs.info(f"{run_path}/shards/{i}.npy")["LastModified"] for i in (0, 2)}
    lost = fs.info(f"{run_path}/shards/1.npy")["ETag"]
    fs.rm([f"{run_path}/shards/1.npy", f"{run_path}/shards/1.json"])
    objstore.clear_work(objstore.work_root(out))
    seen: dict[int, bool] = {}
    again = run(url, params(fixture_cache), out, on_shard=lambda _, r: seen.__setitem__(r.index, r.reused))
    assert seen == {0: True, 1: False, 2: True}
    assert {i: fs.info(f"{run_path}/shards/{i}.npy")["LastModified"] for i in (0, 2)} == kept  # not uploaded again
    assert fs.info(f"{run_path}/shards/1.npy")["ETag"] == lost  # the redone shard: the same bytes
    assert again.run_key == local.run_key
    np.testing.assert_allclose(bucket_embeddings(s3, run_url, tmp_path), local_emb, atol=1e-6, rtol=0)


def test_missing_object_or_bucket_is_a_coded_error_at_once(s3: Any) -> None:
    from helical_airflow.validate import validate_input

    for url in (f"s3://{s3.bucket}/no/such.h5ad", "s3://no-such-bucket-here/x.h5ad"):
        started = time.monotonic()
        with pytest.raises(HelicalAirflowError) as caught:
            validate_input(url, "geneformer")
        assert caught.value.code == "E901" and url in caught.value.message, caught.value.render()
        assert time.monotonic() - started < 10


def test_refused_credentials_are_a_coded_error_without_the_secret(
    s3: Any, cells_h5ad: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = upload(s3, cells_h5ad, "denied/pbmc60.h5ad")
    wrong = "WRONG-secret-" + s3.secret_key[:6]
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong)
    objstore.reset()
    with pytest.raises(HelicalAirflowError) as caught:
        objstore.local_input(url)
    assert caught.value.code == "E902", caught.value.render()
    assert wrong not in caught.value.render() and s3.secret_key not in caught.value.render()


def test_the_dag_validate_task_takes_a_url(
    s3: Any, cells_h5ad: Path, fixture_cache: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from helical_airflow import airflow_tasks

    url = upload(s3, cells_h5ad, "dag/pbmc60.h5ad")
    monkeypatch.setenv("HELICAL_AIRFLOW_CACHE_DIR", fixture_cache)
    summary = airflow_tasks.validate_input({"input_path": url, "model": "geneformer", "label_key": "cell_type"})
    assert summary["source"] == url and summary["n_cells"] == CELLS and Path(summary["path"]).is_file()
    assert summary["sha256"] == hashlib.sha256(cells_h5ad.read_bytes()).hexdigest()  # the content's hash
    # containers and pods do not see the worker's copy: refused up front, not in every container
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException, match="E908"):
        airflow_tasks.validate_input({"input_path": url, "model": "geneformer", "launcher": "docker"})


def test_an_airflow_connection_gives_the_endpoint_and_credentials(
    s3: Any, cells_h5ad: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HELICAL_AIRFLOW_STORAGE_CONN_ID: Airflow's BaseHook.get_connection (here from an AIRFLOW_CONN_ variable, as a
    secrets backend would give it) replaces the standard AWS variables, which are removed."""
    pytest.importorskip("airflow", reason="the airflow extra brings Airflow's connections")
    url = upload(s3, cells_h5ad, "conn/pbmc60.h5ad")
    for name in s3.env():
        monkeypatch.delenv(name)
    conn = {
        "conn_type": "aws",
        "login": s3.access_key,
        "password": s3.secret_key,
        "extra": {"endpoint_url": s3.endpoint},
    }
    monkeypatch.setenv("AIRFLOW_CONN_HELICAL_TEST_S3", json.dumps(conn))
    monkeypatch.setenv("HELICAL_AIRFLOW_STORAGE_CONN_ID", "helical_test_s3")
    objstore.reset()
    copy = Path(objstore.local_input(url))
    assert copy.read_bytes() == cells_h5ad.read_bytes()
