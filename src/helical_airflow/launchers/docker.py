"""The `docker` launcher: the shard runs in a container through Airflow's DockerOperator.

The container runs the runner image's entrypoint (`helical-airflow`) with the job's command (jobs.py): `embed-shard
--plan P --shard I`, or `predict-shard --plan P --classifier SOURCE --shard I`.
It sees the data folder read-only at /opt/data, the output folder writable at the worker's output path (its
own mount) and the weights cache at /opt/helical-cache (a named volume or a host folder, so weights are
downloaded once). plan.json holds the worker's absolute paths; when the worker's folders are not the
container's (a worker outside Compose), the same folders are also mounted at the worker's paths so the plan
resolves unchanged inside the container. GPU shards run the CUDA image with `device_requests`: the one GPU
the group leased on this machine (gpus.py, `device_ids`), or every GPU when the worker detects none or
HELICAL_AIRFLOW_DOCKER_GPUS=all; CPU shards the CPU image, asking for no GPU. The container is removed on
success and on failure.

Settings: settings.py (HELICAL_AIRFLOW_DOCKER_*, HELICAL_AIRFLOW_HOST_*).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .. import gpus, settings
from ..errors import RECYCLE_EXIT
from ..models import get_model
from ..plan import load_plan
from ..settings import DEFAULT_DOCKER_IMAGE as DEFAULT_IMAGE
from ..settings import DockerSettings
from .base import TaskKilled, failure, launched, memory_cap_exceeded, run_until_done, task_killed
from .jobs import EMBED, Job

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


def device_requests(gpu: bool, device: str | None) -> list[Any] | None:
    """No GPU; the leased one (`device`, gpus.py: one shard group per GPU); or every GPU when none was leased (no GPU
    detected on the worker, or HELICAL_AIRFLOW_DOCKER_GPUS=all)."""
    from docker.types import DeviceRequest

    if not gpu:
        return None
    if device is not None:
        return [DeviceRequest(device_ids=[device], capabilities=[["gpu"]])]
    return [DeviceRequest(count=-1, capabilities=[["gpu"]])]


def docker_operator(
    plan_path: str,
    shards: list[int],
    cfg: DockerSettings | None = None,
    task_id: str | None = None,
    gpu_device: str | None = None,
    job: Job = EMBED,
) -> Any:
    """The DockerOperator that runs the job (default: embed) over a group of shards (built at run time: the plan
    decides cache, GPU, memory); `gpu_device`: the GPU leased for it (None: every GPU, for a GPU shard)."""
    from airflow.providers.docker.operators.docker import DockerOperator

    cfg = cfg or DockerSettings.from_env()
    plan = load_plan(plan_path)
    profile = get_model(plan.params.model).profile
    gpu = wants_gpu(profile.gpu, plan.params.device, cfg)
    return DockerOperator(
        task_id=task_id or f"{job.kind.subcommand.replace('-', '_')}_{shards[0]}_container",
        image=image_for(gpu, cfg),
        command=job.command(plan_path, shards)[1:],  # the image's ENTRYPOINT is helical-airflow
        docker_url=cfg.docker_url,
        mounts=container_mounts(cfg, plan.params.cache_dir),
        environment={
            "HELICAL_AIRFLOW_DATA_DIR": str(settings.data_dir()),
            "HELICAL_AIRFLOW_OUTPUT_DIR": str(settings.output_dir()),
            "PYTHONUNBUFFERED": "1",
            **settings.container_env(),
            # the container numbers its one GPU 0: the host's id of it is what the manifest records (embed._gpu_id)
            **({"HELICAL_AIRFLOW_GPU_ID": gpu_device} if gpu and gpu_device is not None else {}),
        },
        device_requests=device_requests(gpu, gpu_device),
        mem_limit=f"{plan.params.memory_cap_gb:g}g",  # a hard cap: the kernel's OOM kill there is E305
        network_mode=cfg.network,
        user=cfg.user,
        container_name=f"helical-{plan.run_key}-{job.kind.label}{shards[0]}-{uuid.uuid4().hex[:6]}",
        labels={
            "helical_airflow.run_key": plan.run_key,
            "helical_airflow.shards": ",".join(map(str, shards)),
            "helical_airflow.job": job.name,
        },  # fmt: skip
        auto_remove="never",  # run_docker reads the exit status through the Docker API, then removes it
        mount_tmp_dir=False,  # nothing to share through /tmp; also works with a remote engine
        do_xcom_push=False,  # the results are read from the run folder
    )


def run_docker(
    plan_path: str,
    shards: list[int],
    cfg: DockerSettings | None = None,
    emit: Callable[[str], None] | None = None,
    job: Job = EMBED,
) -> list[dict]:
    """Run the job (default: embed) over the shards in a container (a fresh one after a recycle); returns their
    results from the run folder. Logs stream into the task log; the exit status comes from the Docker API, never
    from the error's text."""
    emit = emit or log.info
    with _gpu_lease(plan_path, cfg or DockerSettings.from_env(), emit) as device:
        return run_until_done(
            plan_path, shards, lambda todo: _run_container(plan_path, todo, cfg, emit, device, job), emit, job
        )


@contextlib.contextmanager
def _gpu_lease(plan_path: str, cfg: DockerSettings, emit: Callable[[str], None]) -> Iterator[str | None]:
    """One GPU of the engine's machine for a GPU group (gpus.py; the worker and the engine share the machine and its
    lock folder), None for a CPU group or when every GPU is asked for (HELICAL_AIRFLOW_DOCKER_GPUS=all)."""
    try:
        plan = load_plan(plan_path)
        wanted = wants_gpu(get_model(plan.params.model).profile.gpu, plan.params.device, cfg) and not cfg.all_gpus
    except Exception:  # noqa: BLE001 (a missing or broken plan: the container reports it in its own words)
        wanted = False
    if not wanted:
        yield None
        return
    with gpus.lease() as device:
        if device is not None:
            emit(f"GPU {device} leased for this group (device_ids=[{device}])")
        yield device


def _run_container(
    plan_path: str,
    shards: list[int],
    cfg: DockerSettings | None,
    emit: Callable[[str], None],
    gpu_device: str | None = None,
    job: Job = EMBED,
) -> int:
    from airflow.providers.docker.exceptions import DockerContainerFailedException

    operator = docker_operator(plan_path, shards, cfg, gpu_device=gpu_device, job=job)
    emit(f"launching container {operator.container_name} from {operator.image}: {operator.command}")
    logs: list[str] = []
    what = f"container {operator.container_name}"
    try:
        # A nested operator: the launcher is chosen per run (a DAG param), so the mapped task calls it; Airflow
        # calls the task's on_kill, which stops it through launched() (not DockerOperator.on_kill: that waits up
        # to 10 s for `docker stop` and leaves the container, auto_remove being "never" here)
        with launched().track(what, lambda: remove_container(operator)) as tracked:
            operator.execute(context={})
    except DockerContainerFailedException as exc:
        logs = [str(line) for line in (exc.logs or [])]
    except TaskKilled:
        raise
    except Exception as exc:  # whatever the operator makes of its container vanishing under it
        if launched().killed:
            raise task_killed([what]) from exc
        raise
    finally:
        code, oom_killed = container_exit_status(operator)
    if tracked.killed:
        raise task_killed([what])
    if oom_killed:
        raise memory_cap_exceeded(
            plan_path, shards, "its container's memory limit (the kernel's OOM killer ended it)", job
        )
    if code not in (0, RECYCLE_EXIT):
        raise failure(f"container of shard(s) {shards}", code, logs)
    return code


def container_exit_status(operator: Any) -> tuple[int | None, bool]:
    """The container's exit code from the Docker API and whether the kernel's OOM killer ended it (at the memory
    limit, the plan's memory cap), then remove it; (None, False) when it never started."""
    from docker.errors import NotFound

    container = getattr(operator, "container", None)
    if not container:
        return None, False
    try:
        state = operator.cli.inspect_container(container["Id"])["State"]
        return int(state["ExitCode"]), bool(state.get("OOMKilled"))
    except NotFound:  # removed already (on_kill)
        return None, False
    finally:
        remove_container(operator)


def remove_container(operator: Any) -> None:
    """Kill and remove the operator's container at once (one API call), by id, or by its name when the task is
    killed before the operator has recorded it; nothing when there is none."""
    from docker.errors import NotFound

    container = getattr(operator, "container", None)
    with contextlib.suppress(NotFound):
        operator.cli.remove_container(container["Id"] if container else operator.container_name, force=True)
