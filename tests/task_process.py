"""A stand-in for an Airflow task process, for the tests of what a killed task leaves behind.

Runs one embed task the way Airflow 3.3's task runner does, without the API server and supervisor around it: the
DAG's operator (`launchers.lifecycle.embed_task`, EmbedShardOperator) executed through the task runner's own
`_run_execute_callable` (execution_timeout: SIGALRM -> AirflowTaskTimeout -> `task.on_kill()`), under the SIGTERM
handler `task_runner.run` installs (`_on_term`: SIGTERM -> `ti.task.on_kill()`, in the main thread; a closure
there, so copied below). The test plays the supervisor: SIGTERM, then SIGKILL if the process is still alive 5 s
later (supervisor.kill's escalation_delay).

    python tests/task_process.py '{"launcher": "local", "plan": "...", "shards": [0], "options": {...}}'

Prints "task started" once the handler is installed, then the task's outcome ("task ended" or its error).
`TaskProcess` starts one and kills it as Airflow would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

#: supervisor.kill's escalation_delay: SIGKILL follows SIGTERM after this long
ESCALATION_S = 5.0


class TaskProcess:
    """One embed task in a process of its own; its output lines are collected as they come."""

    def __init__(self, args: dict[str, Any]) -> None:
        self.lines: list[str] = []
        argv = [sys.executable, str(Path(__file__)), json.dumps(args)]
        self.proc = subprocess.Popen(
            argv, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, what: str, found: Callable[[], Any], timeout_s: float = 180.0) -> Any:
        """Poll `found()` until it returns something truthy; fails with the task's output past the timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if result := found():
                return result
            if self.proc.poll() is not None:
                raise AssertionError(f"the task ended before {what}:\n{self.output[-3000:]}")
            time.sleep(0.1)
        raise AssertionError(f"no {what} after {timeout_s:.0f} s:\n{self.output[-3000:]}")

    def kill_like_airflow(self, sig: signal.Signals) -> bool:
        """Send `sig` (SIGTERM: the supervisor's kill; SIGALRM: the execution_timeout timer firing), then SIGKILL
        if the process is still alive ESCALATION_S later, as the supervisor does; True when it ended by itself."""
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=ESCALATION_S)
            ended = True
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            ended = False
        self._reader.join(timeout=5)
        return ended

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def main(args: dict[str, Any]) -> int:
    from airflow.sdk.execution_time.task_runner import _run_execute_callable

    from helical_airflow.launchers import launch
    from helical_airflow.launchers.lifecycle import embed_task

    options = dict(args.get("options") or {})
    if args["launcher"] == "docker":
        from helical_airflow.launchers.docker import DockerSettings

        options = {"cfg": DockerSettings(**options)}

    @embed_task(task_id="embed_shard", execution_timeout=timedelta(hours=1))
    def embed_group(plan_path: str, shards: list[int]) -> list[dict[str, Any]]:
        return launch(args["launcher"], plan_path, shards, **options)

    task = embed_group(plan_path=args["plan"], shards=args["shards"]).operator
    parent_pid = os.getpid()

    def _on_term(signum: int, frame: Any) -> None:  # airflow/sdk/execution_time/task_runner.py, run()
        if os.getpid() != parent_pid:
            return
        task.on_kill()

    signal.signal(signal.SIGTERM, _on_term)
    print("task started", flush=True)
    try:
        _run_execute_callable({"params": {}}, task.execute, task)  # non-empty: context_merge replaces an empty one
    except BaseException as exc:  # noqa: BLE001 (reported to the test, as the task runner would log it)
        print(f"task failed: {type(exc).__name__}: {exc}", flush=True)
        return 1
    print("task ended", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
