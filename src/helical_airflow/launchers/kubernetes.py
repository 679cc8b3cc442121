"""The `kubernetes` launcher: the shard runs in its own pod through Airflow's KubernetesPodOperator.

The pod runs the runner image's entrypoint (`helical-airflow`) with the job's command (jobs.py: `embed-shard --plan
P --shard I [--shard J ...]`, or `predict-shard` with `--classifier SOURCE`), the same command as every launcher (a
group of shards, one model load). `shard_pod` builds the whole pod from the model's ResourceProfile and the
deployment's settings (settings.py, HELICAL_AIRFLOW_K8S_*), as a plain function so it can be checked without a
cluster:
- resources: memory request = limit = the profile's `memory_cap_gb`; a CPU request; GPU shards (profile
  `gpu: required`, or `device=cuda`) get `nvidia.com/gpu: 1`, the CUDA image, the GPU node selector and
  tolerations; CPU shards the CPU image and ask for no GPU.
- volumes: the inputs' PVC read-only at the worker's data folder, the outputs' PVC at its output folder and the
  weights PVC at the plan's cache folder, so the paths in plan.json resolve unchanged in the pod.
- runs as the runner image's non-root user (group 0), no privilege escalation, every capability dropped.
The worker mounts the same PVCs: the shards' results are read back from `shards/<i>.json` on the outputs volume;
the pod's exit code (75: recycle, a fresh pod for the shards left) comes from the operator's final pod status.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from .. import settings
from ..errors import RECYCLE_EXIT
from ..models import get_model
from ..plan import load_plan
from ..settings import KubernetesSettings
from .base import TaskKilled, failure, launched, memory_cap_exceeded, run_until_done, task_killed
from .jobs import EMBED, Job

log = logging.getLogger(__name__)

CONTAINER = "base"  # the container name KubernetesPodOperator follows (logs, exit code)
POD_CACHE = "/opt/helical-cache"
_LABEL_VALUE = re.compile(r"[^A-Za-z0-9_.-]")


def _label(value: str) -> str:
    return _LABEL_VALUE.sub("-", value)[:63].strip("-_.") or "x"


def wants_gpu(gpu_policy: str, device: str) -> bool:
    return gpu_policy == "required" or device == "cuda"


def shard_pod(
    plan: Any, plan_path: str, shards: list[int], profile: Any, cfg: KubernetesSettings, job: Job = EMBED
) -> Any:
    """The V1Pod that runs the job (default: embed) over a group of shards (kubernetes client models; nothing is
    sent anywhere)."""
    shard = shards[0]
    from kubernetes.client import models as k8s

    gpu = wants_gpu(profile.gpu, plan.params.device)
    memory = f"{int(round(plan.params.memory_cap_gb * 1024))}Mi"  # the plan's cap (the profile's unless set)
    limits = {"memory": memory}
    requests = {"memory": memory, "cpu": cfg.cpu_request}
    if gpu:
        limits["nvidia.com/gpu"] = "1"
        requests["nvidia.com/gpu"] = "1"
    data = str(settings.data_dir())
    output = str(settings.output_dir())
    cache = plan.params.cache_dir or POD_CACHE
    volumes = [
        k8s.V1Volume(
            name="data",
            persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(claim_name=cfg.data_pvc, read_only=True),
        ),
        k8s.V1Volume(
            name="outputs", persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(claim_name=cfg.output_pvc)
        ),
        k8s.V1Volume(name="tmp", empty_dir=k8s.V1EmptyDirVolumeSource()),
    ]
    mounts = [
        k8s.V1VolumeMount(name="data", mount_path=data, read_only=True),
        k8s.V1VolumeMount(name="outputs", mount_path=output),
        k8s.V1VolumeMount(name="tmp", mount_path="/tmp"),
    ]
    if cfg.cache_pvc:
        volumes.append(
            k8s.V1Volume(
                name="weights",
                persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(claim_name=cfg.cache_pvc),
            )
        )
        mounts.append(k8s.V1VolumeMount(name="weights", mount_path=cache))
    env = {
        "HELICAL_AIRFLOW_DATA_DIR": data,
        "HELICAL_AIRFLOW_OUTPUT_DIR": output,
        "HELICAL_AIRFLOW_CACHE_DIR": cache,
        "PYTHONUNBUFFERED": "1",
        **settings.container_env(),
    }
    container = k8s.V1Container(
        name=CONTAINER,
        image=cfg.gpu_image if gpu else cfg.image,
        args=job.command(plan_path, shards)[1:],  # the image's ENTRYPOINT is helical-airflow
        env=[k8s.V1EnvVar(name=k, value=v) for k, v in env.items()],
        resources=k8s.V1ResourceRequirements(requests=requests, limits=limits),
        volume_mounts=mounts,
        security_context=k8s.V1SecurityContext(
            allow_privilege_escalation=False,
            capabilities=k8s.V1Capabilities(drop=["ALL"]),
            run_as_non_root=True,
        ),
    )
    labels = {
        "app.kubernetes.io/name": "helical-airflow-runner",
        "app.kubernetes.io/component": "shard",
        "helical-airflow/run-key": _label(plan.run_key),
        "helical-airflow/shard": str(shard),
        "helical-airflow/job": job.name,
        "helical-airflow/model": _label(plan.params.model),
        "helical-airflow/queue": profile.queue,
    }
    return k8s.V1Pod(
        api_version="v1",
        kind="Pod",
        metadata=k8s.V1ObjectMeta(
            name=_label(f"helical-{plan.run_key[:12]}-{job.kind.label}{shard}").lower(),
            namespace=cfg.namespace,
            labels=labels,
        ),
        spec=k8s.V1PodSpec(
            restart_policy="Never",  # Airflow's task retries decide, not the kubelet
            containers=[container],
            volumes=volumes,
            node_selector=(cfg.gpu_node_selector if gpu else cfg.node_selector) or None,
            tolerations=[k8s.V1Toleration(**t) for t in (cfg.gpu_tolerations if gpu else cfg.tolerations)] or None,
            service_account_name=cfg.service_account,
            automount_service_account_token=False,  # the shard never talks to the API server
            image_pull_secrets=[k8s.V1LocalObjectReference(name=n) for n in cfg.image_pull_secrets] or None,
            security_context=k8s.V1PodSecurityContext(
                run_as_user=cfg.run_as_user,
                run_as_group=0,
                fs_group=0,
                run_as_non_root=True,
                seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
            ),
        ),
    )


def pod_operator(
    plan_path: str,
    shards: list[int],
    cfg: KubernetesSettings | None = None,
    task_id: str | None = None,
    job: Job = EMBED,
) -> Any:
    """The KubernetesPodOperator for a group of shards (built at run time: the plan decides image, GPU, memory)."""
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    cfg = cfg or settings.kubernetes_settings()
    plan = load_plan(plan_path)
    pod = shard_pod(plan, plan_path, shards, get_model(plan.params.model).profile, cfg, job)
    return KubernetesPodOperator(
        task_id=task_id or f"{job.kind.subcommand.replace('-', '_')}_{shards[0]}_pod",
        full_pod_spec=pod,
        name=pod.metadata.name,
        namespace=cfg.namespace,
        in_cluster=cfg.in_cluster,
        config_file=cfg.config_file,
        startup_timeout_seconds=cfg.startup_timeout,
        get_logs=True,  # the pod's output streams into the task log
        log_events_on_failure=True,  # why it did not start (unschedulable, image pull, OOMKilled)
        on_finish_action="delete_pod",  # removed on success and on failure
        do_xcom_push=False,  # the result is read from the outputs volume
    )


def run_kubernetes(
    plan_path: str,
    shards: list[int],
    cfg: KubernetesSettings | None = None,
    emit: Callable[[str], None] | None = None,
    job: Job = EMBED,
) -> list[dict]:
    """Run the job (default: embed) over the shards in a pod (a fresh one after a recycle); returns their results
    from the shared outputs volume (shards/<i>.json, predictions/<finetune_key>/<i>.npy)."""
    emit = emit or log.info
    return run_until_done(plan_path, shards, lambda todo: _run_pod(plan_path, todo, cfg, emit, job), emit, job)


def _run_pod(
    plan_path: str, shards: list[int], cfg: KubernetesSettings | None, emit: Callable[[str], None], job: Job = EMBED
) -> int:
    operator = pod_operator(plan_path, shards, cfg, job=job)
    emit(f"launching pod {operator.name} in {operator.namespace}")
    what = f"pod {operator.namespace}/{operator.name}"
    try:
        # a killed task deletes its pod: the pod operator's own on_kill, called by the task's (launched().stop())
        with launched().track(what, operator.on_kill) as tracked:
            operator.execute(context=_context())
    except TaskKilled:
        raise
    except Exception as exc:  # AirflowException with the pod's final status, which holds the container's exit code
        if launched().killed:  # what the operator makes of its pod being deleted under it
            raise task_killed([what]) from exc
        found = re.search(r"'exit_code': (-?\d+)", str(exc))
        code = int(found.group(1)) if found else None
        if code == RECYCLE_EXIT:
            return code
        if "OOMKilled" in str(exc):  # the container's terminated reason: it reached its memory limit
            raise memory_cap_exceeded(plan_path, shards, "its pod's memory limit (OOMKilled)", job) from exc
        raise failure(f"pod of shard(s) {shards}", code, str(exc).splitlines()) from exc
    except BaseException:  # AirflowTaskTimeout (execution_timeout), before the pod operator has read back the pod it
        operator.on_kill()  # created: its own clean-up skips a pod it has not read, so delete it here
        raise
    if tracked.killed:
        raise task_killed([what])
    return 0


def _context() -> Any:
    """The running task's context (labels, logs); an empty one outside a task."""
    try:
        from airflow.sdk import get_current_context

        return get_current_context()
    except Exception:
        return {}
