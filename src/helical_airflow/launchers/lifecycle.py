"""The embed and predict tasks inside Airflow's task lifecycle: a killed task stops the process group, container
or pod it launched (any job, launchers/jobs.py: the workflow DAG's embed_shard* and predict_shards* tasks are both
`embed_task`s).

The launchers start their DockerOperator / KubernetesPodOperator (or subprocess) from inside the embed task, so
Airflow only knows the task's own operator and calls *its* `on_kill`. What Airflow 3.3's task SDK does
(airflow/sdk/execution_time/task_runner.py, supervisor.py):
- killed from the UI (marked failed / cleared), by a worker shutdown, or a lost heartbeat: the supervisor sends the
  task process SIGTERM and, 5 s later (`kill(..., escalation_delay=5.0)`), SIGKILL. The task runner's SIGTERM
  handler calls `ti.task.on_kill()` in the task's main thread, in the middle of `execute`.
- past `execution_timeout`: SIGALRM raises AirflowTaskTimeout inside `execute`; once it has unwound, the task
  runner calls `task.on_kill()` and re-raises.

`EmbedShardOperator` is the `@task` operator with an `on_kill`: `execute` opens a fresh `Launched` (launchers/base.py)
that every launcher registers its running launch in, with a stop function; `on_kill` stops them all (the local
launcher SIGTERMs, then SIGKILLs, the embed process group; the docker launcher removes the container with
force; the kubernetes launcher calls the pod operator's own on_kill, which deletes the pod) and then, when it
stopped something, raises E516 (TaskKilled): the handler runs in the task's main thread, so the error ends
`execute` at once (and stops an image pull before its container is created) instead of letting the task run on
until the SIGKILL. On the timeout path the launchers have already cleaned up while AirflowTaskTimeout unwound
(each launch's `finally` / `except BaseException`): nothing is left to stop and on_kill raises nothing.

This module imports Airflow at import time: only the DAG file imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from airflow.providers.standard.decorators.python import _PythonDecoratedOperator
from airflow.sdk.bases.decorator import task_decorator_factory

from .base import Launched, task_killed, tracking

__all__ = ["EmbedShardOperator", "embed_task"]


class EmbedShardOperator(_PythonDecoratedOperator):
    """`@task`'s operator (same templating, XComs and mapping) whose on_kill stops what the task launched."""

    _launched: Launched | None = None

    def execute(self, context: Any) -> Any:
        with tracking() as launched:
            self._launched = launched
            return super().execute(context)

    def on_kill(self) -> None:
        launched = self._launched
        if launched is None:  # killed before execute
            return
        stopped = launched.stop()
        if stopped:
            raise task_killed(stopped)


def embed_task(python_callable: Callable[..., Any] | None = None, **kwargs: Any) -> Any:
    """Like `@task(...)`, with EmbedShardOperator as the operator: `@embed_task(task_id=..., queue=..., ...)`."""
    return task_decorator_factory(
        python_callable=python_callable, decorated_operator_class=EmbedShardOperator, **kwargs
    )
