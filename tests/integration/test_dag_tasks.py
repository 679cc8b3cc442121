"""The functions the DAG's tasks call (helical_airflow.airflow_tasks): the data-folder rule, which errors
fail fast instead of retrying, run parameters from the DAG's Params, and claiming files from incoming/."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("airflow")

from airflow.sdk.exceptions import AirflowFailException  # noqa: E402

from helical_airflow import airflow_tasks as steps  # noqa: E402
from helical_airflow.errors import ConfigError, ShardError  # noqa: E402
from helical_airflow.launchers.base import failure  # noqa: E402


@pytest.fixture()
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("HELICAL_AIRFLOW_DATA_DIR", str(root))
    return root


def test_inputs_must_be_inside_the_data_folder(data: Path, tmp_path: Path) -> None:
    (data / "sub").mkdir()
    assert steps.resolve_input("sub/x.h5ad") == data / "sub" / "x.h5ad"
    assert steps.resolve_input(str(data / "x.h5ad")) == data / "x.h5ad"
    outside = tmp_path / "secret.h5ad"
    outside.write_text("x")
    (data / "link.h5ad").symlink_to(outside)  # a link that leads out of the folder
    for bad in ("../secret.h5ad", "sub/../../secret.h5ad", str(outside), "link.h5ad", "/etc/passwd"):
        with pytest.raises(ConfigError) as err:
            steps.resolve_input(bad)
        assert err.value.code == "E513" and str(data) in err.value.hint


def test_errors_a_retry_cannot_fix_fail_the_task_at_once() -> None:
    def raising(exc: Exception):  # type: ignore[no-untyped-def]
        @steps.fail_fast_on_user_errors
        def task() -> None:
            raise exc

        return task

    with pytest.raises(AirflowFailException, match="E201"):
        raising(ConfigError("E201", "unknown model 'x'", "pick one"))()
    with pytest.raises(AirflowFailException, match="E204"):
        raising(failure("shard 0", 2, ["error E204: plan file missing"]))()  # exit 2: user error
    with pytest.raises(ShardError):  # a shard crash is retried by Airflow
        raising(ShardError("E301", "read failed", "retry"))()
    killed = failure("shard 0", -9, ["Killed"])
    with pytest.raises(type(killed)):  # killed (out of memory?): retried
        raising(killed)()


def test_run_params_take_the_params_and_the_workers_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HELICAL_AIRFLOW_CACHE_DIR", "/opt/helical-cache")
    params = {"input_path": "x.h5ad", "model": "scgpt", "shard_size": 7, "device": "cpu", "precision": None,
              "batch_size": None, "layer": None, "engine": "fast", "seed": 3, "launcher": "docker"}  # fmt: skip
    run = steps.run_params(params)
    assert (run.model, run.shard_size, run.device, run.engine, run.seed) == ("scgpt", 7, "cpu", "fast", 3)
    assert run.precision is None and run.batch_size is None  # left to the model's profile
    assert run.cache_dir == "/opt/helical-cache"


def test_claim_moves_finished_files_once(data: Path) -> None:
    incoming = data / "incoming"
    incoming.mkdir()
    old = time.time() - 60
    for name in ("a.h5ad", "b.h5ad"):
        (incoming / name).write_bytes(b"x")
        os.utime(incoming / name, (old, old))
    (incoming / "c.h5ad.part").write_bytes(b"x")  # still being copied: not a .h5ad yet
    claimed = steps.claim_incoming(min_age_s=5, wait_s=0)
    assert claimed == ["incoming/accepted/a.h5ad", "incoming/accepted/b.h5ad"]
    assert sorted(p.name for p in incoming.iterdir() if p.is_file()) == ["c.h5ad.part"]
    assert steps.claim_incoming(min_age_s=5, wait_s=0) == []  # nothing twice
    # a new file with a name already accepted keeps both
    (incoming / "a.h5ad").write_bytes(b"y")
    os.utime(incoming / "a.h5ad", (old, old))
    again = steps.claim_incoming(min_age_s=5, wait_s=0)
    assert len(again) == 1 and again[0] != "incoming/accepted/a.h5ad" and (data / again[0]).read_bytes() == b"y"


def test_a_file_still_growing_is_not_claimed(data: Path) -> None:
    incoming = data / "incoming"
    incoming.mkdir()
    (incoming / "new.h5ad").write_bytes(b"x")  # modified just now
    assert steps.claim_incoming(min_age_s=30, wait_s=0) == []
    assert (incoming / "new.h5ad").exists()


@pytest.mark.slow
def test_the_task_chain_writes_to_a_bucket_from_two_work_folders(
    real_s3_server: Any, sample_h5ad: Path, fixture_cache: str, data: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """The workflow's tasks with the `output` Param a bucket (real SeaweedFS), each step on one of two "workers"
    that share only the bucket (each its own HELICAL_AIRFLOW_OBJECT_CACHE_DIR, switched between calls as Celery
    would land the tasks): embeddings equal a one-process run's, XComs carry URLs, no secret anywhere."""
    import anndata as ad
    import numpy as np

    from helical_airflow import objstore
    from helical_airflow.pipeline import run
    from helical_airflow.spec import RunParams

    s3 = real_s3_server
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HELICAL_AIRFLOW_CACHE_DIR", fixture_cache)
    monkeypatch.setenv("HELICAL_AIRFLOW_TASK_SLOTS", "2")  # 3 shards -> 2 embed tasks, one on each worker
    cells = tmp_path / "pbmc60.h5ad"
    ad.read_h5ad(sample_h5ad)[:60].copy().write_h5ad(cells)
    s3.filesystem().put_file(str(cells), f"{s3.bucket}/dag-in/pbmc60.h5ad")
    out = f"s3://{s3.bucket}/dag-outputs"
    params = {"input_path": f"s3://{s3.bucket}/dag-in/pbmc60.h5ad", "model": "geneformer", "shard_size": 20,
              "device": "cpu", "launcher": "local", "output": out}  # fmt: skip

    def on_worker(n: int) -> Path:
        folder = tmp_path / f"worker-{n}"
        monkeypatch.setenv("HELICAL_AIRFLOW_OBJECT_CACHE_DIR", str(folder))
        objstore.reset()
        return folder

    caplog.set_level("INFO")
    xcoms: list[Any] = []
    on_worker(1)
    summary = steps.validate_input(params)
    planned = steps.plan_shards(params, summary)
    xcoms += [summary, planned]
    run_url = f"{out}/pbmc60/{planned['run_key']}"
    assert planned["plan_path"] == f"{run_url}/plan.json" and planned["out_dir"] == run_url
    assert len(planned["groups"]) == 2
    for n, group in zip((1, 2), planned["groups"], strict=True):  # worker 2 never validated: it stages the input
        on_worker(n)
        xcoms.append(steps.launch_shards(planned["plan_path"], group, "local"))
    w2 = on_worker(2)
    xcoms.append(steps.merge(planned["plan_path"]))
    on_worker(1)
    xcoms.append(steps.quality_gate(planned["plan_path"]))
    on_worker(2)
    published = steps.publish(planned["plan_path"])
    xcoms.append(published)
    assert (
        published["embeddings"] == f"{run_url}/embeddings.h5ad" and published["manifest"] == f"{run_url}/manifest.json"
    )
    assert objstore.read_latest(f"{out}/pbmc60") == planned["run_key"]
    assert not (w2 / "work").exists() or not any((w2 / "work").rglob(f"{planned['run_key']}/*"))  # cleaned
    assert any((w2 / "inputs").rglob("pbmc60.h5ad"))  # staged on worker 2 too

    local = run(cells, RunParams(model="geneformer", shard_size=20, device="cpu", cache_dir=fixture_cache),
                tmp_path / "local")  # fmt: skip
    assert local.run_key == planned["run_key"]  # the same content and parameters wherever the file and run sit
    fetched = tmp_path / "fetched.h5ad"
    fs = s3.filesystem()
    fs.get_file(f"{run_url.removeprefix('s3://')}/embeddings.h5ad", str(fetched))
    expected = ad.read_h5ad(tmp_path / "local" / "pbmc60" / local.run_key / "embeddings.h5ad").obsm["X_geneformer"]
    np.testing.assert_allclose(ad.read_h5ad(fetched).obsm["X_geneformer"], expected, atol=1e-6, rtol=0)
    names = {p.removeprefix(f"{run_url.removeprefix('s3://')}/") for p in fs.find(run_url.removeprefix("s3://"))}
    assert {"plan.json", "manifest.json", "report.html", "shards/0.npy", "shards/2.json"} <= names, names

    # no XCom after validate's names a worker-local path (validate's summary names its staged copy beside the URL,
    # summary.source, which a worker lacking the copy stages again), no secret in any object, XCom, file or log line
    assert str(tmp_path) not in json.dumps(xcoms[1:]), xcoms[1:]
    text = json.dumps(xcoms)
    secret = s3.secret_key
    leaks = [p for p in fs.find(s3.bucket) if secret.encode() in fs.cat_file(p)]
    leaks += [str(p) for p in tmp_path.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    leaks += ["xcom"] if secret in text else []
    leaks += ["log"] if secret in caplog.text else []
    assert not leaks, leaks


def test_the_output_param_takes_a_url_or_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HELICAL_AIRFLOW_OUTPUT_DIR", str(tmp_path / "out"))
    assert steps.check_output({}) == str(tmp_path / "out")  # empty: the worker's folder, as before
    assert steps.check_output({"output": "s3://b/runs/"}) == "s3://b/runs"
    cases = {"/tmp/elsewhere": "E909", "s3://AKID:secret@b/runs": "E907", "s3://b/runs?X-Amz-Signature=1": "E907",
             "s3:///runs": "E906"}  # fmt: skip
    for output, code in cases.items():
        with pytest.raises(ConfigError) as err:
            steps.check_output({"output": output})
        assert err.value.code == code and "secret" not in err.value.render(), err.value.render()
    # the trigger form refuses the same values before a run starts (the Param's pattern)
    from helical_airflow.dag_params import OUTPUT_PATTERN

    assert [bool(re.match(OUTPUT_PATTERN, o)) for o in ("", "s3://b/runs", *cases)] == [True, True] + [False] * 4
    with pytest.raises(ConfigError, match="E910"):
        steps.check_output({"output": "s3://b/runs", "launcher": "docker"})
    with pytest.raises(ConfigError, match="E911"):
        steps.check_output({"output": "s3://b/runs", "annotate_classifier": "models:/x@champion"})
    monkeypatch.setenv("HELICAL_AIRFLOW_OUTPUT_DIR", "s3://b/from-settings")
    assert steps.check_output({}) == "s3://b/from-settings"
