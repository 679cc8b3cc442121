"""No orphans, no duplicates: one writer per shard (a flock the kernel releases when its holder dies) and shard
processes that die with the process that launched them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from helical_airflow import bounded, shardlock


def _hold(lock: Path, seconds: float, then: str = "") -> subprocess.Popen[str]:
    """Another process that takes the lock, says so, keeps it `seconds`, optionally runs `then`, and exits."""
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from helical_airflow.shardlock import shard_lock
        with shard_lock(Path({str(lock)!r})):
            print("held", flush=True)
            time.sleep({seconds})
            {then}
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout and proc.stdout.readline().strip() == "held"
    return proc


def test_a_live_holder_keeps_the_lock_and_is_named(tmp_path: Path) -> None:
    lock = tmp_path / "shards" / "3.lock"
    holder = _hold(lock, 60)
    try:
        with pytest.raises(TimeoutError, match=f"pid {holder.pid}"), shardlock.shard_lock(lock, wait_s=1.5):
            raise AssertionError("the lock was taken while its holder is alive")
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_of_a_killed_holder_is_free_at_once(tmp_path: Path) -> None:
    lock = tmp_path / "0.lock"
    holder = _hold(lock, 600)
    holder.send_signal(signal.SIGKILL)  # an orphan's end, or an OOM kill: no cleanup code runs
    holder.wait()
    started = time.monotonic()
    with shardlock.shard_lock(lock, wait_s=5):
        assert time.monotonic() - started < 1
    assert f"pid {os.getpid()}" in shardlock.holder(lock)


def test_a_retry_waits_for_the_earlier_attempt_and_sees_its_work(tmp_path: Path) -> None:
    """The decorated embed_shard runs only once the earlier attempt has finished writing."""
    shard_file = tmp_path / "shards" / "0.npy"
    shard_file.parent.mkdir()
    earlier = _hold(shardlock.lock_file(shard_file), 2, then=f"Path({str(shard_file)!r}).write_text('done')")
    seen: list[bool] = []

    @shardlock.one_writer_per_shard
    def embed_shard(plan: object, index: int) -> str:
        seen.append(shard_file.exists())
        return "reused" if shard_file.exists() else "embedded"

    plan = SimpleNamespace(shards=[object()], shard_file=lambda i: tmp_path / "shards" / f"{i}.npy")
    assert embed_shard(plan, 0) == "reused" and seen == [True]
    earlier.wait()


def test_a_shard_process_dies_with_the_process_that_launched_it(tmp_path: Path) -> None:
    """A launcher (here a small parent) SIGKILLed with its whole process group: its shard, in its own session, dies."""
    pid_file = tmp_path / "shard.pid"
    parent_script = textwrap.dedent(f"""
        import subprocess, sys, time
        from helical_airflow.bounded import parent_death_preexec
        shard = subprocess.Popen([sys.executable, "-c", "import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(600)"],
                                 start_new_session=True, preexec_fn=parent_death_preexec())
        time.sleep(600)
    """)  # noqa: E501
    parent = subprocess.Popen([sys.executable, "-c", parent_script], start_new_session=True)
    deadline = time.monotonic() + 60
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    shard = psutil.Process(int(pid_file.read_text()))
    assert shard.is_running()
    os.killpg(parent.pid, signal.SIGKILL)  # what killing the worker's process group does
    parent.wait()
    gone, _ = psutil.wait_procs([shard], timeout=10)
    assert gone, "the shard outlived its launcher (an orphan)"


def test_the_local_launcher_arms_the_parent_death_signal(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import inspect

    from helical_airflow.launchers import local

    seen: dict = {}

    class Stop(Exception):
        """Raised by the stand-in Popen once it has seen the launcher's arguments."""

    def popen(argv: list[str], **kwargs: object) -> None:
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(local.subprocess, "Popen", popen)
    shards = [0] if "shards" in inspect.signature(local.run_local).parameters else 0
    with pytest.raises(Stop):
        local.run_local(str(tmp_path / "plan.json"), shards)  # type: ignore[arg-type]
    assert seen["start_new_session"] is True and callable(seen["preexec_fn"])
    assert bounded.parent_death_preexec() is not None  # Linux: prctl found


def test_embed_shard_holds_the_shard_lock() -> None:
    from helical_airflow import embed

    wrapper_code = shardlock.one_writer_per_shard(lambda plan, index: None).__code__
    assert embed.embed_shard.__code__ is wrapper_code and embed.embed_shard.__wrapped__.__name__ == "embed_shard"


def test_every_dag_task_dies_with_its_airflow_supervisor(monkeypatch: pytest.MonkeyPatch) -> None:
    """Airflow puts the task process in its own process group: killing a worker's group spares it, unless armed."""
    from helical_airflow import airflow_tasks

    armed: list[bool] = []
    monkeypatch.setattr(airflow_tasks, "die_with_parent", lambda: armed.append(True))
    assert airflow_tasks.fail_fast_on_user_errors(lambda: 7)() == 7 and armed == [True]


def test_die_with_parent_kills_a_process_whose_parent_dies(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    parent_script = textwrap.dedent(f"""
        import os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c",
            "import os, time; from helical_airflow.bounded import die_with_parent; die_with_parent(); "
            "open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(600)"], start_new_session=True)
        time.sleep(600)
    """)
    parent = subprocess.Popen([sys.executable, "-c", parent_script])
    deadline = time.monotonic() + 60
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    child = psutil.Process(int(pid_file.read_text()))
    parent.kill()
    parent.wait()
    gone, _ = psutil.wait_procs([child], timeout=10)
    assert gone
