"""What every launcher shares: the command line, reading the shards' results from the store, and turning a failure
into an error.

A launcher runs `helical-airflow embed-shard --plan P --shard I [--shard J ...]`: one process (or container, or
pod) embeds a group of shards with one model load, checkpointing each. The results are then read from the run
folder (shards/<i>.json, the same records resume trusts), never from the process's output.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from ..errors import RECYCLE_EXIT, HelicalAirflowError

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


def shard_command(plan_path: str, shards: Sequence[int], program: str = "helical-airflow") -> list[str]:
    """THE command every launcher runs: embed these shards of the plan, loading the model once."""
    return [program, "embed-shard", "--plan", str(plan_path), *(a for i in shards for a in ("--shard", str(i)))]


def read_results(plan_path: str, shards: Sequence[int]) -> list[dict]:
    """The shards' ShardResults from the run folder; E512 when the process exited 0 but one is missing."""
    from ..plan import load_plan
    from ..store import finished_result

    plan = load_plan(plan_path)
    results = {i: finished_result(plan, i) for i in shards}
    missing = [i for i, r in results.items() if r is None]
    if missing:
        raise LaunchError(
            "E512",
            f"the embed process exited normally but shard(s) {missing} have no finished result in {plan.out_dir}",
            "check that the runner has the same helical-airflow version and sees the same output folder",
            0,
            retryable=True,
        )
    return [r.model_dump() for r in results.values() if r is not None]


def run_until_done(
    plan_path: str, shards: Sequence[int], run_once: Callable[[list[int]], int], emit: Callable[[str], None]
) -> list[dict]:
    """What every launcher does with a group: run one embed process (container, pod) over the shards, and while it
    exits RECYCLE_EXIT having made progress, another over the shards left; then read the results from the store.
    `run_once` returns the exit code (0 or RECYCLE_EXIT) or raises LaunchError."""
    try:
        already = set(shards) - set(left_to_do(plan_path, shards))  # reused, not embedded by this launch
    except HelicalAirflowError:  # e.g. no plan: the embed process reports it in its own words (and exit code)
        already = set()
    todo = list(shards)
    while True:
        code = run_once(todo)
        left = left_to_do(plan_path, shards)
        if code != RECYCLE_EXIT or not left or left == todo:  # no progress: the results say what is missing
            break
        emit(f"embed process recycled; a fresh one takes the {len(left)} shard(s) left")
        todo = left
    return [{**r, "reused": r["index"] in already} for r in read_results(plan_path, shards)]


def left_to_do(plan_path: str, shards: Sequence[int]) -> list[int]:
    """The shards of the group without a finished result (what a recycled process leaves for the next one)."""
    from ..plan import load_plan
    from ..store import finished_result

    plan = load_plan(plan_path)
    return [i for i in shards if finished_result(plan, i) is None]


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


def memory_cap_exceeded(plan_path: str, shards: Sequence[int], used: str) -> LaunchError:
    """E305 for an embed process stopped at the plan's memory cap (`used`: what was seen, e.g. "2301 MB RSS"), with
    half the batch size written to the run folder for the retry (store.batch_size); not retryable once at 1."""
    from ..plan import load_plan
    from ..store import halve_batch_size

    plan = load_plan(plan_path)
    cap = plan.params.memory_cap_gb
    error = LaunchError("E305", f"memory cap exceeded: shard(s) {list(shards)} used {used}, over the cap of {cap:g} GB",
                        "", None, retryable=True)  # fmt: skip
    from .. import telemetry

    telemetry.emit_failure(plan, "E305")  # the embed process was killed before it could count its own failure
    old, new = halve_batch_size(plan, error.message)
    fix = "or lower shard_size, or raise memory_cap_gb (the machine permitting)"
    error.hint = f"the retry runs with batch size {new} (was {old}), {fix}" if new < old else f"batch size is 1: {fix}"
    error.retryable = new < old
    return error


def unknown_launcher(name: str) -> HelicalAirflowError:
    return HelicalAirflowError("E510", f"unknown launcher {name!r}", f"use one of: {', '.join(LAUNCHERS)}")
