"""Launchers: the shared command line, failures surfaced with the shard's own error, the local
subprocess for real (failure, success, and no orphan when the task dies), the container spec."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from helical_airflow.errors import HelicalAirflowError
from helical_airflow.launchers import EMBED, JOBS, LAUNCHERS, Job, LaunchError, launch, predict, shard_command
from helical_airflow.launchers.base import failure, read_results
from helical_airflow.launchers.jobs import prediction_file
from helical_airflow.launchers.local import run_local, runner_program


def test_every_launcher_runs_the_same_command() -> None:
    expected = ["helical-airflow", "embed-shard", "--plan", "/d/plan.json", "--shard", "3", "--shard", "4"]
    assert shard_command("/d/plan.json", [3, 4]) == expected
    assert set(LAUNCHERS) == {"local", "docker", "kubernetes"}
    with pytest.raises(Exception, match="E510"):
        launch("ssh", "/d/plan.json", [0])


def test_each_job_has_its_own_command_and_result_reader(plan_path: str) -> None:
    """The job registry: embed and predict, each its command line (the launchers add nothing of their own) and where
    its results are read back; a predict job without its model is refused (E517)."""
    assert set(JOBS) == {"embed", "predict"}
    assert EMBED.command("/d/plan.json", [3, 4]) == shard_command("/d/plan.json", [3, 4])
    job = predict("/out/s/finetune/cell_type/abc", "abc")
    assert job.command("/d/plan.json", [0, 2], program="x") == [
        "x", "predict-shard", "--plan", "/d/plan.json", "--classifier", "/out/s/finetune/cell_type/abc",
        "--shard", "0", "--shard", "2",
    ]  # fmt: skip
    assert shard_command("/d/plan.json", [5], job=job)[1:3] == ["predict-shard", "--plan"]
    for name, fields in (("tokenise", {}), ("predict", {}), ("predict", {"classifier": "/m"})):
        with pytest.raises(HelicalAirflowError, match="E517"):
            Job(name, **fields)

    # predictions are read from predictions/<finetune_key>/<i>.npy: finished with one row per cell of the shard
    from helical_airflow.plan import load_plan

    plan = load_plan(plan_path)
    job = predict("/unused", "reader-test")
    with pytest.raises(LaunchError, match="E512") as err:
        read_results(plan_path, [0, 1], job)  # the process exited 0, nothing written
    assert err.value.retryable and "[0, 1]" in err.value.message and "predictions" in err.value.message
    first = prediction_file(plan, "reader-test", 0)
    first.parent.mkdir(parents=True)
    np.save(first, np.zeros((plan.shards[0].cells, 3), dtype=np.float32))
    np.save(prediction_file(plan, "reader-test", 1), np.zeros((plan.shards[1].cells - 1, 3)))  # a short file
    with pytest.raises(LaunchError, match=r"shard\(s\) \[1\]"):
        read_results(plan_path, [0, 1], job)
    assert read_results(plan_path, [0], job) == [{"index": 0, "cells": plan.shards[0].cells, "path": str(first)}]


def test_runner_program_uses_the_configured_environment(tmp_path: Path) -> None:
    assert runner_program(sys.executable) == [str(Path(sys.executable).parent / "helical-airflow")]
    bare = tmp_path / "python"  # an environment without the console script
    assert runner_program(str(bare)) == [str(bare), "-m", "helical_airflow.cli"]


def test_failure_quotes_the_shard_error_and_decides_retries() -> None:
    user = failure("shard 0", 2, ["loading", "error E204: plan file /x does not exist", "  fix: create it"])
    assert user.code == "E511" and "E204: plan file /x does not exist" in user.message
    assert user.process_exit_code == 2 and not user.retryable
    crash = failure("shard 1", 3, ["error E301: shard read failed"])
    assert crash.retryable and "E301" in crash.message
    killed = failure("container of shard 2", 137, ["Killed"])
    assert killed.retryable and "memory" in killed.hint


def test_results_come_from_the_store_and_a_missing_one_is_e512(plan_path: str) -> None:
    with pytest.raises(LaunchError, match="E512") as err:
        read_results(plan_path, [0])  # nothing embedded yet: exit 0 would not be enough
    assert err.value.retryable


def test_local_launcher_surfaces_exit_code_and_error_line(tmp_path: Path) -> None:
    lines: list[str] = []
    with pytest.raises(LaunchError) as err:
        run_local(str(tmp_path / "missing-plan.json"), [0], emit=lines.append)
    assert err.value.process_exit_code == 2 and not err.value.retryable
    assert "E204" in err.value.message
    assert any("E204" in line for line in lines), "the shard's output must reach the task log"


@pytest.fixture(scope="module")
def plan_path(tmp_path_factory: pytest.TempPathFactory, sample_h5ad: Path, fixture_cache: str) -> str:
    from helical_airflow.pipeline import prepare
    from helical_airflow.spec import RunParams

    out = tmp_path_factory.mktemp("out")
    params = RunParams(model="geneformer", shard_size=300, device="cpu", cache_dir=fixture_cache)
    return str(prepare(sample_h5ad, params, out).plan_file)


@pytest.mark.slow
def test_local_launcher_embeds_a_shard_then_reuses_it(plan_path: str) -> None:
    lines: list[str] = []
    (result,) = run_local(plan_path, [1], emit=lines.append)
    assert result["index"] == 1 and result["start"] == 300 and result["cells"] == 300 and not result["reused"]
    assert (Path(plan_path).parent / "shards" / "1.npy").is_file()
    assert any("FIXTURE" in line for line in lines)
    assert run_local(plan_path, [1])[0]["reused"] is True


@pytest.mark.slow
def test_a_group_loads_the_model_once_and_a_recycled_process_hands_over(
    tmp_path: Path, sample_h5ad: Path, fixture_cache: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One process per group (one model load) unless recycled: then a fresh process per two shards here."""
    from helical_airflow.pipeline import prepare
    from helical_airflow.spec import RunParams

    params = RunParams(model="gf-6L-10M-i2048", shard_size=140, device="cpu", cache_dir=fixture_cache)
    plan = str(prepare(sample_h5ad, params, tmp_path).plan_file)  # 5 shards
    lines: list[str] = []
    results = run_local(plan, [0, 1, 2], emit=lines.append)
    assert [r["index"] for r in results] == [0, 1, 2]
    assert [r["model_load_seconds"] > 0 for r in results] == [True, False, False]  # loaded once for the group
    assert sum(line.startswith("launching") for line in lines) == 1
    monkeypatch.setenv("HELICAL_AIRFLOW_RUNNER_MAX_SHARDS", "1")
    lines.clear()
    results = run_local(plan, [0, 1, 2, 3, 4], emit=lines.append)
    assert [r["reused"] for r in results] == [True, True, True, False, False]
    assert [r["model_load_seconds"] > 0 for r in results][3:] == [True, True]  # shard 3, then a fresh process
    assert sum(line.startswith("launching") for line in lines) == 2
    assert any("recycled" in line for line in lines)


def _shard_processes(plan: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if "embed-shard" in cmd and plan in cmd and proc.pid != os.getpid():
            found.append(proc)
    return found


@pytest.mark.slow
def test_a_killed_task_takes_its_shard_process_down(plan_path: str) -> None:
    """Airflow stops a timed-out or killed task by raising inside it; the shard must not outlive it."""

    class TaskKilled(Exception):
        """Stands in for AirflowTaskTimeout."""

    seen: list[int] = []

    def emit(line: str) -> None:
        if not line.startswith("launching"):
            seen.extend(p.pid for p in _shard_processes(plan_path))
            raise TaskKilled  # what AirflowTaskTimeout does: an exception in the middle of the task

    box: dict[str, BaseException] = {}
    thread = threading.Thread(target=lambda: _catch(box, lambda: run_local(plan_path, [2], emit=emit)))
    thread.start()
    thread.join(120)
    assert isinstance(box.get("error"), TaskKilled)
    assert seen, "the shard process was running when the task died"
    time.sleep(0.5)
    assert [p for p in _shard_processes(plan_path) if p.status() != psutil.STATUS_ZOMBIE] == []
    assert not (Path(plan_path).parent / "shards" / "2.npy").exists()  # nothing half-written


def _catch(box: dict[str, BaseException], fn) -> None:  # type: ignore[no-untyped-def]
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001 (handed to the test thread)
        box["error"] = exc


def _group(pgid: int) -> list[psutil.Process]:
    """The live (not zombie) processes of a process group."""
    found = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return found


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGALRM], ids=["killed", "timed-out"])
def test_a_killed_airflow_task_stops_its_whole_embed_process_group(
    plan_path: str, tmp_path: Path, sig: signal.Signals
) -> None:
    """The embed task run as Airflow runs it (tests/task_process.py), killed as Airflow kills it: SIGTERM (the UI,
    a worker shutdown: the task runner calls on_kill) or SIGALRM (execution_timeout). The embed process's whole
    group goes, a child of its own included, within the 5 s the supervisor allows before its SIGKILL (the
    parent-death signal would take only the embed process itself)."""
    from task_process import ESCALATION_S, TaskProcess  # tests/task_process.py

    python = tmp_path / "bin" / "python"  # the runner's Python, which leaves a child in the group first
    python.parent.mkdir()
    python.write_text(f'#!/bin/sh\nsleep 300 &\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    task = TaskProcess({"launcher": "local", "plan": plan_path, "shards": [0], "options": {"python": str(python)}})
    pgid = 0
    try:
        pgid = task.wait_for("embed process", lambda: next((p.pid for p in _shard_processes(plan_path)), 0))
        task.wait_for("its child", lambda: len(_group(pgid)) >= 2)
        killed_at = time.monotonic()
        assert task.kill_like_airflow(sig), f"the task outlived the supervisor's grace:\n{task.output[-3000:]}"
        while _group(pgid) and time.monotonic() - killed_at < ESCALATION_S:
            time.sleep(0.1)
        assert _group(pgid) == [], "the embed process group outlived its task"
    finally:
        task.close()
        if pgid:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
    ended = "E516" if sig == signal.SIGTERM else "AirflowTaskTimeout"
    assert f"task failed: {'TaskKilled' if ended == 'E516' else ended}" in task.output, task.output[-3000:]
    assert not (Path(plan_path).parent / "shards" / "0.npy").exists()  # nothing half-written


def test_concurrent_shards_share_the_cores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from helical_airflow.launchers.local import thread_limits

    def plan(n: int) -> str:
        path = tmp_path / f"plan{n}.json"
        path.write_text(json.dumps({"shards": [{"index": i} for i in range(n)]}))
        return str(path)

    cores = os.cpu_count() or 1
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("AIRFLOW__CELERY__WORKER_CONCURRENCY", "4")
    assert thread_limits(plan(10))["OMP_NUM_THREADS"] == str(max(1, cores // 4))
    assert thread_limits(plan(1))["OMP_NUM_THREADS"] == str(cores)  # alone on the worker: every core
    assert thread_limits(plan(2))["OMP_NUM_THREADS"] == str(max(1, cores // 2))
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert thread_limits(plan(10)) == {}  # an explicit setting wins


@pytest.mark.slow
def test_a_shard_past_its_memory_cap_is_stopped_and_the_retry_halves_the_batch(
    tmp_path: Path, sample_h5ad: Path, fixture_cache: str
) -> None:
    """E305: the local launcher kills an embed process whose tree passes the plan's memory cap (here 0.15 GB: the
    interpreter alone with torch imported is ~0.4 GB), writes half the batch size for the retry, and a retry (here
    in this process, which has no cap) embeds with it; at batch 1 there is nothing left to halve, so no retry."""
    from helical_airflow.embed import embed_shard
    from helical_airflow.launchers.base import memory_cap_exceeded
    from helical_airflow.pipeline import prepare
    from helical_airflow.spec import RunParams

    params = RunParams(model="geneformer", shard_size=350, device="cpu", batch_size=24, cache_dir=fixture_cache,
                       memory_cap_gb=0.15)  # fmt: skip
    plan = prepare(sample_h5ad, params, tmp_path)
    assert plan.params.batch_size == 24 and plan.params.memory_cap_gb == 0.15
    lines: list[str] = []
    with pytest.raises(LaunchError) as err:
        run_local(str(plan.plan_file), [0], emit=lines.append)
    assert err.value.code == "E305" and err.value.retryable
    assert "memory cap exceeded" in err.value.message and "0.15 GB" in err.value.message
    assert "batch size 12 (was 24)" in err.value.hint
    assert json.loads((plan.out_path / "batch_size.json").read_text())["batch_size"] == 12
    time.sleep(0.5)
    assert [p for p in _shard_processes(str(plan.plan_file)) if p.status() != psutil.STATUS_ZOMBIE] == []
    assert not plan.shard_file(0).exists()  # nothing half-written
    assert embed_shard(plan, 0).batch_size == 12  # the retry's batch, recorded in its ShardResult

    hints = [memory_cap_exceeded(str(plan.plan_file), [1], "x MB") for _ in range(4)]  # 12 -> 6 -> 3 -> 1 -> 1
    assert [e.retryable for e in hints] == [True, True, True, False]
    assert "batch size is 1" in hints[-1].hint
