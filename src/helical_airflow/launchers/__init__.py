"""Launchers run one shard in its own process or container, always with the same command line:

    helical-airflow embed-shard --plan PLAN.json --shard I

`local` (a subprocess in a configured Python environment; the default), `docker` (Airflow's
DockerOperator) and `kubernetes` (Airflow's KubernetesPodOperator, a pod per shard). A model crash or
out-of-memory kills that process, never the Airflow worker.
"""

from __future__ import annotations

from .base import LAUNCHERS, LaunchError, shard_command

__all__ = ["LAUNCHERS", "LaunchError", "launch", "shard_command"]


def launch(launcher: str, plan_path: str, shard: int, **options: object) -> dict:
    """Run shard `shard` of the plan with the named launcher; returns the shard's ShardResult as a dict."""
    if launcher == "local":
        from .local import run_local

        return run_local(plan_path, shard, **options)  # type: ignore[arg-type]
    if launcher == "docker":
        from .docker import run_docker

        return run_docker(plan_path, shard, **options)  # type: ignore[arg-type]
    if launcher == "kubernetes":
        from .kubernetes import run_kubernetes

        return run_kubernetes(plan_path, shard, **options)  # type: ignore[arg-type]
    from .base import unknown_launcher

    raise unknown_launcher(launcher)
