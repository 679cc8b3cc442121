"""The `docker` launcher: the shard runs in a container through Airflow's DockerOperator.

The container runs the runner image's entrypoint (`helical-airflow`) with `embed-shard --plan P --shard I`.
It sees the data folder read-only at /opt/data, the output folder writable at the worker's output path (its
own mount) and the weights cache at /opt/helical-cache (a named volume or a host folder, so weights are
downloaded once). plan.json holds the worker's absolute paths; when the worker's folders are not the
container's (a worker outside Compose), the same folders are also mounted at the worker's paths so the plan
resolves unchanged inside the container. GPU shards run the CUDA image with `device_requests`; CPU shards
the CPU image, asking for no GPU. The container is removed on success and on failure.

Settings: settings.py (HELICAL_AIRFLOW_DOCKER_*, HELICAL_AIRFLOW_HOST_*).
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import settings
from ..settings import DEFAULT_DOCKER_IMAGE as DEFAULT_IMAGE
from ..settings import DockerSettings
from .base import LaunchError, failure, parse_result, shard_command

log = logging.getLogger(__name__)

CONTAINER_DATA = "/opt/data"
CONTAINER_CACHE = "/opt/helical-cache"
__all__ = ["CONTAINER_CACHE", "CONTAINER_DATA", "DEFAULT_IMAGE", "DockerSettings", "docker_operator", "run_docker"]


def _bind(source: str, target: str, read_only: bool = False) -> Any:
    from docker.types import Mount

    kind = "bind" if source.startswith("/") else "volume"  # a bare name is a Docker volume
    return Mount(target=target, source=source, type=kind, read_only=read_only)


def container_mounts(cfg: DockerSettings, cache_dir: str | None) -> list[Any]:
    """Data read-only at /opt/data (and at the worker's path), outputs writable, the weights cache, extra binds."""
    data = str(settings.data_dir())
    output = str(settings.output_dir())
    host_data = cfg.host_data_dir or data
    mounts = [_bind(host_data, CONTAINER_DATA, read_only=True)]
    if data != CONTAINER_DATA:
        mounts.append(_bind(host_data, data, read_only=True))
    # always its own mount, writable (also when it lies inside the read-only data folder: a nested mount)
    host_output = cfg.host_output_dir or (
        str(Path(host_data) / Path(output).relative_to(data)) if Path(output).is_relative_to(data) else output
    )
    mounts.append(_bind(host_output, output))
    if cache_dir:
        source = cfg.cache_source or cache_dir
        mounts.append(_bind(source, CONTAINER_CACHE))
        if cache_dir != CONTAINER_CACHE:
            mounts.append(_bind(source, cache_dir))
    for spec in cfg.extra_mounts:
        source, target, *mode = spec.strip().split(":")
        mounts.append(_bind(source, target, read_only=mode == ["ro"]))
    return mounts


def wants_gpu(gpu_policy: str, device: str, cfg: DockerSettings) -> bool:
    return cfg.all_gpus or gpu_policy == "required" or device == "cuda"


def image_for(gpu: bool, cfg: DockerSettings) -> str:
    """The CUDA image for GPU shards (HELICAL_AIRFLOW_DOCKER_GPU_IMAGE), the CPU image otherwise."""
    return (cfg.gpu_image or cfg.image) if gpu else cfg.image


def docker_operator(plan_path: str, shard: int, cfg: DockerSettings | None = None, task_id: str | None = None) -> Any:
    """The DockerOperator that runs one shard (built at run time: the plan decides cache, GPU and memory)."""
    from airflow.providers.docker.operators.docker import DockerOperator
    from docker.types import DeviceRequest

    from ..models import get_model
    from ..plan import load_plan

    cfg = cfg or DockerSettings.from_env()
    plan = load_plan(plan_path)
    profile = get_model(plan.params.model).profile
    gpu = wants_gpu(profile.gpu, plan.params.device, cfg)
    passed = ("HELICAL_AIRFLOW_STATSD_HOST", "HELICAL_AIRFLOW_STATSD_PORT", "MLFLOW_TRACKING_URI")
    return DockerOperator(
        task_id=task_id or f"embed_shard_{shard}_container",
        image=image_for(gpu, cfg),
        command=shard_command(plan_path, shard)[1:],  # the image's ENTRYPOINT is helical-airflow
        docker_url=cfg.docker_url,
        mounts=container_mounts(cfg, plan.params.cache_dir),
        environment={
            "HELICAL_AIRFLOW_DATA_DIR": str(settings.data_dir()),
            "HELICAL_AIRFLOW_OUTPUT_DIR": str(settings.output_dir()),
            "PYTHONUNBUFFERED": "1",
            **{k: os.environ[k] for k in passed if k in os.environ},
        },
        device_requests=[DeviceRequest(count=-1, capabilities=[["gpu"]])] if gpu else None,
        mem_limit=f"{profile.memory_cap_gb:g}g",
        network_mode=cfg.network,
        user=cfg.user,
        container_name=f"helical-{plan.run_key}-shard{shard}-{uuid.uuid4().hex[:6]}",
        labels={"helical_airflow.run_key": plan.run_key, "helical_airflow.shard": str(shard)},
        auto_remove="force",  # removed on success and on failure
        mount_tmp_dir=False,  # nothing to share through /tmp; also works with a remote engine
        do_xcom_push=True,
        xcom_all=True,  # every log line comes back: the ShardResult is the last JSON line
    )


def run_docker(
    plan_path: str, shard: int, cfg: DockerSettings | None = None, emit: Callable[[str], None] | None = None
) -> dict:
    """Run the shard in a container; returns its ShardResult (dict). Logs stream into the task log."""
    from airflow.providers.docker.exceptions import DockerContainerFailedException

    operator = docker_operator(plan_path, shard, cfg)
    (emit or log.info)(f"launching container {operator.container_name} from {operator.image}: {operator.command}")
    try:
        # A nested operator: the launcher is chosen per run (a DAG param), so the mapped task calls it.
        lines = operator.execute(context={})
    except DockerContainerFailedException as exc:
        found = re.search(r"'StatusCode': (-?\d+)", str(exc))
        logs = [str(line) for line in (exc.logs or [])]
        raise failure(f"container of shard {shard}", int(found.group(1)) if found else None, logs) from None
    if not isinstance(lines, list):
        raise LaunchError("E512", "the container printed nothing", "check the runner image", 0, retryable=False)
    return parse_result([str(line) for line in lines])
