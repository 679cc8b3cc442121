"""Launchers run a group of shards in a process, container or pod of its own, with a job's command line
(jobs.py; one name per role, the same code path for both):

    embed    helical-airflow embed-shard --plan PLAN.json --shard I [--shard J ...]
    predict  helical-airflow predict-shard --plan PLAN.json --classifier SOURCE --shard I [--shard J ...]

`local` (a subprocess in a configured Python environment; the default), `docker` (Airflow's
DockerOperator) and `kubernetes` (Airflow's KubernetesPodOperator). The model is loaded once per group; every
shard is checkpointed; the results are read from the run folder. A model crash or out-of-memory kills that
process, never the Airflow worker.
"""

from __future__ import annotations

from .base import LAUNCHERS, LaunchError, shard_command, unknown_launcher
from .docker import run_docker
from .jobs import EMBED, JOBS, Job, predict
from .kubernetes import run_kubernetes
from .local import run_local

__all__ = ["EMBED", "JOBS", "LAUNCHERS", "Job", "LaunchError", "launch", "predict", "shard_command"]


def launch(launcher: str, plan_path: str, shards: list[int], job: Job = EMBED, **options: object) -> list[dict]:
    """Run the job (default: embed) over these shards of the plan with the named launcher; returns their results
    (dicts: ShardResults for embed; index, cells, path for predict) with `reused` set."""
    if launcher == "local":
        return run_local(plan_path, shards, job=job, **options)  # type: ignore[arg-type]
    if launcher == "docker":
        return run_docker(plan_path, shards, job=job, **options)  # type: ignore[arg-type]
    if launcher == "kubernetes":
        return run_kubernetes(plan_path, shards, job=job, **options)  # type: ignore[arg-type]

    raise unknown_launcher(launcher)
