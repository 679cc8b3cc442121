"""What every launcher shares: the command line, reading its result, and turning a failure into an error."""

from __future__ import annotations

import json
import re

from ..errors import HelicalAirflowError

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


def shard_command(plan_path: str, shard: int, program: str = "helical-airflow") -> list[str]:
    """THE command every launcher runs."""
    return [program, "embed-shard", "--plan", str(plan_path), "--shard", str(shard)]


def parse_result(lines: list[str]) -> dict:
    """The shard's ShardResult: the last line of its stdout that is a JSON object."""
    for line in reversed(lines):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    raise LaunchError(
        "E512",
        "the shard finished but printed no result (a ShardResult JSON line)",
        "check that the runner has the same helical-airflow version as the worker",
        0,
        retryable=False,
    )


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


def unknown_launcher(name: str) -> HelicalAirflowError:
    return HelicalAirflowError("E510", f"unknown launcher {name!r}", f"use one of: {', '.join(LAUNCHERS)}")
