"""The functions the DAG's tasks call (helical_airflow.airflow_tasks): the data-folder rule, which errors
fail fast instead of retrying, run parameters from the DAG's Params, and claiming files from incoming/."""

from __future__ import annotations

import os
import time
from pathlib import Path

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
