"""The `local` launcher: `helical-airflow embed-shard` as a subprocess of the configured Python environment.

Its output is streamed line by line into the caller's log (the Airflow task log); the process gets its
own process group, so a killed or timed-out task also kills the shard and nothing is left running.
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

from ..bounded import parent_death_preexec
from .base import failure, parse_result, shard_command

log = logging.getLogger(__name__)


def runner_program(python: str | None = None) -> list[str]:
    """How to call helical-airflow in the configured env (HELICAL_AIRFLOW_RUNNER_PYTHON, default: this one)."""
    python = python or os.environ.get("HELICAL_AIRFLOW_RUNNER_PYTHON") or sys.executable
    script = Path(python).parent / "helical-airflow"
    return [str(script)] if script.is_file() else [python, "-m", "helical_airflow.cli"]


def thread_limits(plan_path: str) -> dict[str, str]:
    """Share the CPU cores between the shards that can run side by side on this worker.

    Each shard process would otherwise start one math thread per core, and N concurrent shards would
    fight over the cores (N x cores threads). N is the worker's concurrency, or the plan's shard count
    when smaller (a one-shard plan keeps every core). Explicit OMP_NUM_THREADS settings are left alone.
    """
    if "OMP_NUM_THREADS" in os.environ:
        return {}
    concurrency = int(os.environ.get("AIRFLOW__CELERY__WORKER_CONCURRENCY", "1") or 1)
    # a missing or broken plan is reported by the shard process itself
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        concurrency = min(concurrency, len(json.loads(Path(plan_path).read_text())["shards"]))
    threads = str(max(1, (os.cpu_count() or 1) // max(concurrency, 1)))
    return {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}


def run_local(
    plan_path: str,
    shard: int,
    python: str | None = None,
    env: dict[str, str] | None = None,
    emit: Callable[[str], None] | None = None,
) -> dict:
    """Run the shard; returns its ShardResult (dict). Raises LaunchError with the exit code on failure."""
    argv = [*runner_program(python), *shard_command(plan_path, shard)[1:]]
    emit = emit or log.info
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
    if code != 0:
        raise failure(f"shard {shard} (pid {proc.pid})", code, lines)
    return parse_result(lines)


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
