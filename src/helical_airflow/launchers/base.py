"""What every launcher shares: the command line, reading the shards' results from the store, and turning a failure
into an error.

A launcher runs a job's command (jobs.py: `helical-airflow embed-shard --plan P --shard I [--shard J ...]`, or
`predict-shard` with a fine-tuned model): one process (or container, or pod) works through a group of shards with
one model load, checkpointing each. The results are then read from the run folder (shards/<i>.json, the same
records resume trusts; predictions/<finetune_key>/<i>.npy), never from the process's output.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Iterator, Sequence

from .. import telemetry
from ..errors import RECYCLE_EXIT, HelicalAirflowError
from ..plan import load_plan
from ..store import halve_batch_size
from .jobs import EMBED, Job

log = logging.getLogger(__name__)

LAUNCHERS = ("local", "docker", "kubernetes")

#: exit codes of `helical-airflow embed-shard` (errors.py): 2 = the user must fix something, 3 = the shard failed
USER_ERROR_EXIT = 2

_ERROR_LINE = re.compile(r"error (E\d{3}): (.*)")


class LaunchError(HelicalAirflowError):
    """The shard's process or container failed; `retryable` is False when retrying cannot help."""

    def __init__(self, code: str, message: str, hint: str, exit_code: int | None, retryable: bool) -> None:
        super().__init__(code, message, hint)
        self.process_exit_code = exit_code
        self.retryable = retryable


class TaskKilled(LaunchError):
    """E516: the task was killed (from the UI, by its execution_timeout, a worker shutdown) and what it had launched
    was stopped. Retryable: Airflow decides whether the task runs again (a task marked failed from the UI does not)."""


class Launched:
    """What a task has launched and is waiting on: the stop function of each running process group, container or
    pod, so that Airflow's `on_kill` (launchers.lifecycle.EmbedShardOperator) can stop them. Once stopped, nothing
    new may be launched through it: `track` raises TaskKilled (a recycled process would otherwise start after the
    kill, in the seconds before the supervisor's SIGKILL, and outlive the task)."""

    def __init__(self) -> None:
        self._running: dict[int, tuple[str, Callable[[], None]]] = {}
        self._next = 0
        self.killed = False

    @contextlib.contextmanager
    def track(self, what: str, stop: Callable[[], None]) -> Iterator[Launched]:
        """Register `stop` (which must take `what` down and may be called from a signal handler) while the body
        runs; raises TaskKilled at once if the task was already killed."""
        if self.killed:
            raise task_killed([what], started=False)
        self._next += 1
        key = self._next
        self._running[key] = (what, stop)
        try:
            yield self
        finally:
            self._running.pop(key, None)

    def stop(self) -> list[str]:
        """Stop everything still running (once each); returns what was stopped. Never raises: a stop that fails is
        logged and the others still run."""
        self.killed = True
        stopped = []
        while self._running:
            key = next(iter(self._running))
            what, stop = self._running.pop(key)
            log.warning("task killed: stopping %s", what)
            try:
                stop()
            except Exception:  # noqa: BLE001 (on_kill must reach every launch; the task is ending anyway)
                log.exception("could not stop %s", what)
            stopped.append(what)
        return stopped


#: what the current task launched (launchers.lifecycle.tracking swaps in a fresh one per task execution)
_launched = Launched()


def launched() -> Launched:
    """The current task's Launched (a process-wide one outside an Airflow task, e.g. the CLI's and tests')."""
    return _launched


@contextlib.contextmanager
def tracking() -> Iterator[Launched]:
    """A fresh Launched for one task execution, current while the body runs."""
    global _launched
    previous, _launched = _launched, Launched()
    try:
        yield _launched
    finally:
        _launched = previous


def task_killed(stopped: Sequence[str], started: bool = True) -> TaskKilled:
    done = f"stopped {', '.join(stopped)}" if started else f"{', '.join(stopped)} was not started"
    return TaskKilled(
        "E516",
        f"the task was killed (from the UI, past its execution_timeout or by a worker shutdown): {done}",
        "nothing to fix if the kill was intended; finished shards are kept and a rerun reuses them. Past "
        "execution_timeout: raise it in the DAG or lower shard_size / the group size",
        None,
        retryable=True,
    )


def shard_command(
    plan_path: str, shards: Sequence[int], program: str = "helical-airflow", job: Job = EMBED
) -> list[str]:
    """THE command a launcher runs for a job (default: embed) over these shards of the plan, one model load."""
    return job.command(plan_path, shards, program)


def read_results(plan_path: str, shards: Sequence[int], job: Job = EMBED) -> list[dict]:
    """The shards' results (embed: ShardResults) from the run folder; E512 when the process exited 0 but one is
    missing (retryable: the retry redoes only the missing shards)."""
    plan = load_plan(plan_path)
    results = {i: job.result(plan, i) for i in shards}
    missing = [i for i, r in results.items() if r is None]
    if missing:
        raise LaunchError(
            "E512",
            f"the {job.name} process exited normally but shard(s) {missing} have no {job.kind.result_name} in "
            f"{plan.out_dir}",
            "check that the runner has the same helical-airflow version and sees the same output folder",
            0,
            retryable=True,
        )
    return [r for r in results.values() if r is not None]


def run_until_done(
    plan_path: str,
    shards: Sequence[int],
    run_once: Callable[[list[int]], int],
    emit: Callable[[str], None],
    job: Job = EMBED,
) -> list[dict]:
    """What every launcher does with a group: run one process (container, pod) of the job over the shards, and
    while it exits RECYCLE_EXIT having made progress, another over the shards left; then read the results from the
    store. `run_once` returns the exit code (0 or RECYCLE_EXIT) or raises LaunchError."""
    try:
        already = set(shards) - set(left_to_do(plan_path, shards, job))  # reused, not redone by this launch
    except HelicalAirflowError:  # e.g. no plan: the launched process reports it in its own words (and exit code)
        already = set()
    todo = list(shards)
    while True:
        code = run_once(todo)
        left = left_to_do(plan_path, shards, job)
        if code != RECYCLE_EXIT or not left or left == todo:  # no progress: the results say what is missing
            break
        emit(f"{job.name} process recycled; a fresh one takes the {len(left)} shard(s) left")
        todo = left
    return [{**r, "reused": r["index"] in already} for r in read_results(plan_path, shards, job)]


def left_to_do(plan_path: str, shards: Sequence[int], job: Job = EMBED) -> list[int]:
    """The shards of the group without a finished result (what a recycled process leaves for the next one)."""
    plan = load_plan(plan_path)
    return [i for i in shards if job.result(plan, i) is None]


def failure(where: str, exit_code: int | None, lines: list[str]) -> LaunchError:
    """A LaunchError that quotes the shard's own `error Exxx: ...` line when it printed one."""
    found = next((m for line in reversed(lines) if (m := _ERROR_LINE.search(line))), None)
    reason = (
        f"{found.group(1)}: {found.group(2)}"
        if found
        else "no error line; last output: " + " | ".join(line.strip() for line in lines[-5:])
    )
    killed = exit_code is not None and exit_code < 0 or exit_code == 137
    hint = (
        "the process was killed (out of memory?): lower shard_size or batch_size, or give it more memory"
        if killed
        else "see the shard's log above; user errors (exit 2) are not retried"
    )
    return LaunchError(
        "E511",
        f"{where} exited with code {exit_code} ({reason})",
        hint,
        exit_code,
        retryable=exit_code != USER_ERROR_EXIT,
    )


def memory_cap_exceeded(plan_path: str, shards: Sequence[int], used: str, job: Job = EMBED) -> LaunchError:
    """E305 for a process stopped at the plan's memory cap (`used`: what was seen, e.g. "2301 MB RSS"), with half
    the batch size written to the run folder for the retry (store.batch_size); not retryable once at 1, nor for a
    job whose memory the batch size does not bound (jobs.JobKind.adapts_batch: predict)."""
    plan = load_plan(plan_path)
    cap = plan.params.memory_cap_gb
    error = LaunchError("E305", f"memory cap exceeded: shard(s) {list(shards)} used {used}, over the cap of {cap:g} GB",
                        "", None, retryable=True)  # fmt: skip

    telemetry.emit_failure(plan, "E305")  # the process was killed before it could count its own failure
    fix = "or lower shard_size, or raise memory_cap_gb (the machine permitting)"
    if not job.kind.adapts_batch:
        error.hint, error.retryable = f"the {job.name} job's memory does not follow the batch size: {fix[3:]}", False
        return error
    old, new = halve_batch_size(plan, error.message)
    error.hint = f"the retry runs with batch size {new} (was {old}), {fix}" if new < old else f"batch size is 1: {fix}"
    error.retryable = new < old
    return error


def unknown_launcher(name: str) -> HelicalAirflowError:
    return HelicalAirflowError("E510", f"unknown launcher {name!r}", f"use one of: {', '.join(LAUNCHERS)}")
