"""The `local` launcher: a job's command (`helical-airflow embed-shard`, or `predict-shard`: jobs.py) as a
subprocess of the configured Python environment.

One process works through the task's group of shards with one model load. Its output is streamed line by line into the
caller's log (the Airflow task log); the process gets its own process group, so a killed or timed-out task also
kills the shards and nothing is left running (a killed task: its on_kill, launchers/lifecycle.py; a timed-out one:
the AirflowTaskTimeout passing through here). The process tree's memory is watched against the plan's memory cap
(MemoryWatch): past it the process is killed and the task fails with E305, leaving half the batch size for the
retry. On a worker with GPUs each group leases one (gpus.py) and its process sees only that one
(CUDA_VISIBLE_DEVICES), so N groups run on N GPUs at once. A process that stops early to be recycled (exit 75:
its memory bound or shard count, embed.Recycle) is followed by a fresh one for the shards left. A model crash or an
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
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil

from .. import gpus, settings
from ..bounded import parent_death_preexec
from ..errors import RECYCLE_EXIT
from ..plan import load_plan, task_groups
from .base import failure, launched, memory_cap_exceeded, run_until_done, task_killed
from .jobs import EMBED, Job

log = logging.getLogger(__name__)

#: on_kill's SIGTERM-to-SIGKILL wait for the embed process group: well inside the 5 s the Airflow supervisor gives
#: the task process between its own SIGTERM and SIGKILL (supervisor.kill's escalation_delay); the shard has no
#: state to save (every finished shard is already on disk, written atomically)
KILL_GRACE_S = 2.0


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
    if settings.get().omp_num_threads is not None:
        return {}
    concurrency = settings.get().worker_concurrency  # unset: the default the plan's grouping assumes (settings.py)
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
    job: Job = EMBED,
) -> list[dict]:
    """Run the job (default: embed) over the shards; returns their results (dicts) from the store. Raises
    LaunchError on failure."""
    emit = emit or log.info
    with gpu_lease(plan_path, emit) as gpu:
        # the process sees one GPU (as cuda:0) and records the machine's id of it (embed._gpu_id)
        pinned = {**(env or {}), "CUDA_VISIBLE_DEVICES": gpu, "HELICAL_AIRFLOW_GPU_ID": gpu} if gpu is not None else env
        return run_until_done(
            plan_path, shards, lambda todo: _run_process(plan_path, todo, python, pinned, emit, job), emit, job
        )


@contextlib.contextmanager
def gpu_lease(plan_path: str, emit: Callable[[str], None]) -> Iterator[str | None]:
    """One of this worker's GPUs, leased for the group (gpus.py), when the plan may run on a GPU and the worker has
    one; None otherwise (a CPU plan, a CPU machine: nothing pinned)."""
    if not may_use_gpu(plan_path):
        yield None
        return
    with gpus.lease() as gpu:
        if gpu is not None:
            emit(f"GPU {gpu} leased for this group (CUDA_VISIBLE_DEVICES={gpu})")
        yield gpu


def may_use_gpu(plan_path: str) -> bool:
    """The plan asks for `auto` or `cuda` (a missing or broken plan: no; the process reports it itself)."""
    with contextlib.suppress(Exception):
        return load_plan(plan_path).params.device != "cpu"
    return False


def _run_process(
    plan_path: str,
    shards: list[int],
    python: str | None,
    env: dict[str, str] | None,
    emit: Callable[[str], None],
    job: Job = EMBED,
) -> int:
    """One process of the job over `shards`; its exit code (0 or RECYCLE_EXIT), LaunchError for any other."""
    argv = [*runner_program(python), *job.command(plan_path, shards)[1:]]
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
    watch = MemoryWatch(proc, memory_cap_mb(plan_path))
    what = f"{job.name} process {proc.pid} (its process group)"
    try:
        # on_kill (Airflow's SIGTERM handler, in this thread) stops the group at once: the supervisor SIGKILLs
        # this process 5 s after its SIGTERM, and the shard's own children would outlive it
        with launched().track(what, lambda: _kill_group(proc, grace_s=KILL_GRACE_S)) as tracked:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line.rstrip("\n"))
                emit(line.rstrip("\n"))
            code = proc.wait()
    except BaseException:  # task killed or timed out: take the shard down with it
        _kill_group(proc)
        raise
    finally:
        watch.stop()
    if tracked.killed:  # stopped by on_kill after its last line: not a failure of the shard
        raise task_killed([what])
    if watch.exceeded_mb:
        raise memory_cap_exceeded(plan_path, shards, f"{watch.exceeded_mb:.0f} MB peak RSS (process tree)", job)
    if code not in (0, RECYCLE_EXIT):
        raise failure(f"shard(s) {shards} (pid {proc.pid})", code, lines)
    return code


def memory_cap_mb(plan_path: str) -> float:
    """The plan's memory cap in MB (0: no plan to read; the process then reports that itself)."""
    with contextlib.suppress(Exception):
        return load_plan(plan_path).params.memory_cap_gb * 1024
    return 0.0


class MemoryWatch:
    """Kills the embed process's group when the peak resident memory of its process tree passes `cap_mb`.

    Polled every POLL_S: without a cgroup of its own (the docker and kubernetes launchers set a hard limit there)
    this is what keeps one shard from pushing a shared worker into the kernel's OOM killer, which would pick any
    process, the Celery worker included. It reads each process's high-water mark (VmHWM, the kernel's peak RSS),
    not its current RSS: on a quiet machine a batch's attention peak is shorter than the poll (Geneformer
    fixture, 700 cells at batch 700: a 32 s run passed a 2.1 GB cap unseen with current RSS, its peak 2314 MB),
    so a spike is caught at the next poll even after it is freed, as a cgroup limit would have caught it.
    """

    POLL_S = 0.2

    def __init__(self, proc: subprocess.Popen[str], cap_mb: float) -> None:
        self.proc, self.cap_mb, self.exceeded_mb = proc, cap_mb, 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="memory-watch", daemon=True)
        if cap_mb > 0:
            self._thread.start()

    def _watch(self) -> None:
        try:
            root = psutil.Process(self.proc.pid)
        except psutil.NoSuchProcess:
            return
        while not self._done.wait(self.POLL_S):
            peak = 0
            with contextlib.suppress(psutil.Error):
                for p in (root, *root.children(recursive=True)):
                    with contextlib.suppress(psutil.Error, OSError, ValueError):
                        peak += peak_rss_bytes(p)
            if peak / 2**20 > self.cap_mb:
                self.exceeded_mb = peak / 2**20
                log.error("embed process %d: peak RSS %.0f MB, above its memory cap of %.0f MB: killing it",
                          self.proc.pid, self.exceeded_mb, self.cap_mb)  # fmt: skip
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                return

    def stop(self) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


def peak_rss_bytes(proc: psutil.Process) -> int:
    """The process's peak resident memory (Linux: VmHWM in /proc/<pid>/status); its current RSS elsewhere."""
    try:
        with open(f"/proc/{proc.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except FileNotFoundError:
        pass
    return int(proc.memory_info().rss)


def _kill_group(proc: subprocess.Popen[str], grace_s: float = 10.0) -> None:
    """SIGTERM the embed process's group, SIGKILL it after `grace_s`; then SIGKILL what is left of the group
    (a child the shard started, which its leader's exit does not take down)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_s)
        os.killpg(proc.pid, signal.SIGKILL)
