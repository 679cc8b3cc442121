"""The `local` launcher: `helical-airflow embed-shard` as a subprocess of the configured Python environment.

One process embeds the task's group of shards with one model load. Its output is streamed line by line into the
caller's log (the Airflow task log); the process gets its own process group, so a killed or timed-out task also
kills the shards and nothing is left running. A process that stops early to be recycled (exit 75: its memory
bound or shard count, embed.Recycle) is followed by a fresh one for the shards left. A model crash or an
out-of-memory kills that process, never the Celery worker.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from .. import settings
from ..bounded import parent_death_preexec
from ..errors import RECYCLE_EXIT
from ..plan import task_groups
from .base import failure, run_until_done, shard_command

log = logging.getLogger(__name__)


def runner_program(python: str | None = None) -> list[str]:
    """How to call helical-airflow in the configured env (HELICAL_AIRFLOW_RUNNER_PYTHON, default: this one)."""
    python = python or settings.runner_python() or sys.executable
    script = Path(python).parent / "helical-airflow"
    return [str(script)] if script.is_file() else [python, "-m", "helical_airflow.cli"]


def thread_limits(plan_path: str) -> dict[str, str]:
    """Share the CPU cores between the shards that can run side by side on this worker.

    Each shard process would otherwise start one math thread per core, and N concurrent shards would
    fight over the cores (N x cores threads). N is the worker's concurrency, or the number of task groups the
    plan makes when smaller (a one-group plan keeps every core). Explicit OMP_NUM_THREADS settings are left alone.
    """
    if "OMP_NUM_THREADS" in os.environ:
        return {}
    concurrency = int(os.environ.get("AIRFLOW__CELERY__WORKER_CONCURRENCY", "1") or 1)
    # a missing or broken plan is reported by the shard process itself
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        n_shards = len(json.loads(Path(plan_path).read_text())["shards"])
        groups = task_groups(n_shards, settings.task_slots(), settings.max_shards_per_task())
        concurrency = min(concurrency, len(groups))  # one embed process per group of shards
    threads = str(max(1, (os.cpu_count() or 1) // max(concurrency, 1)))
    return {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}


def run_local(
    plan_path: str,
    shards: list[int],
    python: str | None = None,
    env: dict[str, str] | None = None,
    emit: Callable[[str], None] | None = None,
) -> list[dict]:
    """Embed the shards; returns their ShardResults (dicts) from the store. Raises LaunchError on failure."""
    emit = emit or log.info
    return run_until_done(plan_path, shards, lambda todo: _run_process(plan_path, todo, python, env, emit), emit)


def _run_process(
    plan_path: str, shards: list[int], python: str | None, env: dict[str, str] | None, emit: Callable[[str], None]
) -> int:
    """One embed process over `shards`; its exit code (0 or RECYCLE_EXIT), LaunchError for any other."""
    argv = [*runner_program(python), *shard_command(plan_path, shards)[1:]]
    emit("launching: " + " ".join(argv))
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **thread_limits(plan_path), **(env or {}), "PYTHONUNBUFFERED": "1", "COLUMNS": "160"},
        text=True,
        errors="replace",
        start_new_session=True,
        preexec_fn=parent_death_preexec(),  # dies with the task process: no orphan when a worker is killed
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            emit(line.rstrip("\n"))
        code = proc.wait()
    except BaseException:  # task killed or timed out: take the shard down with it
        _kill_group(proc)
        raise
    if code not in (0, RECYCLE_EXIT):
        raise failure(f"shard(s) {shards} (pid {proc.pid})", code, lines)
    return code


def _kill_group(proc: subprocess.Popen[str]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue
