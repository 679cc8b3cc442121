"""Where things live and how shards are launched, from the environment, with defaults that work from a checkout.

One place so the CLI, the DAG, the launchers and the containers agree:
- HELICAL_AIRFLOW_DATA_DIR   input data folder (mounted read-only at /opt/data in containers); default ./data
- HELICAL_AIRFLOW_OUTPUT_DIR where runs are written (compose: /opt/outputs, its own mount); default <data dir>/outputs
- HELICAL_AIRFLOW_CACHE_DIR  weights cache root (becomes helical's CACHE_DIR_HELICAL_PREFIX); default:
                             helical's own default (~/.cache/helical/models)
- MLFLOW_TRACKING_URI        MLflow tracking server (e.g. http://127.0.0.1:5000); unset: no tracking. The CLI's
                             --tracking-uri overrides it (tracking.py)
- HELICAL_AIRFLOW_MODELS_URL where `models download` fetches model files by their cache path (default helical's
                             own store, https://helicalpackage.s3.eu-west-2.amazonaws.com; a mirror or a test server)

The `docker` launcher (DockerSettings, read by `docker_settings()`):
- HELICAL_AIRFLOW_DOCKER_IMAGE        runner image for CPU shards (default helical-airflow-runner:0.1.0)
- HELICAL_AIRFLOW_DOCKER_GPU_IMAGE    runner image for GPU shards, the CUDA variant (default: the CPU image)
- HELICAL_AIRFLOW_DOCKER_URL          Docker API (default $DOCKER_HOST, else unix:///var/run/docker.sock;
                                      compose: tcp://docker-socket-proxy:2375, profile `docker`)
- HELICAL_AIRFLOW_HOST_DATA_DIR       the data folder as the Docker engine's host sees it (default: worker's path)
- HELICAL_AIRFLOW_HOST_OUTPUT_DIR     the output folder as the engine's host sees it (default: worker's path)
- HELICAL_AIRFLOW_DOCKER_CACHE        weights cache: a volume name or a host folder (default: worker's cache path)
- HELICAL_AIRFLOW_DOCKER_NETWORK      network mode (e.g. the Compose network, `none`)
- HELICAL_AIRFLOW_DOCKER_USER         user to run as (uid:gid)
- HELICAL_AIRFLOW_DOCKER_EXTRA_MOUNTS comma-separated `source:target[:ro]` binds (development images)
- HELICAL_AIRFLOW_DOCKER_GPUS         `all`: every shard gets the GPU image and every GPU (default: GPU shards only)

The `kubernetes` launcher (KubernetesSettings, read by `kubernetes_settings()`); pods see the data PVC read-only
at the worker's data folder, the outputs PVC at its output folder and the weights PVC at its cache folder, so
plan.json's paths resolve unchanged:
- HELICAL_AIRFLOW_K8S_NAMESPACE        namespace of the shard pods (default helical-airflow)
- HELICAL_AIRFLOW_K8S_IMAGE            runner image for CPU shards (default helical-airflow/runner:0.1.0)
- HELICAL_AIRFLOW_K8S_GPU_IMAGE        runner image for GPU shards (default helical-airflow/runner:0.1.0-cuda)
- HELICAL_AIRFLOW_K8S_DATA_PVC         PersistentVolumeClaim of the inputs, mounted read-only (default helical-data)
- HELICAL_AIRFLOW_K8S_OUTPUT_PVC       PVC of the outputs (default helical-outputs)
- HELICAL_AIRFLOW_K8S_CACHE_PVC        PVC of the weights cache (default helical-weights; empty: no cache volume)
- HELICAL_AIRFLOW_K8S_NODE_SELECTOR    node selector of CPU pods, JSON object (default none)
- HELICAL_AIRFLOW_K8S_GPU_NODE_SELECTOR node selector of GPU pods, JSON object (default none)
- HELICAL_AIRFLOW_K8S_TOLERATIONS      tolerations of CPU pods, JSON list of Kubernetes tolerations (default none)
- HELICAL_AIRFLOW_K8S_GPU_TOLERATIONS  tolerations of GPU pods (default: tolerate the `nvidia.com/gpu` taint)
- HELICAL_AIRFLOW_K8S_CPU_REQUEST      CPU request of a shard pod (default 1)
- HELICAL_AIRFLOW_K8S_SERVICE_ACCOUNT  service account of the pods (default: the namespace's default)
- HELICAL_AIRFLOW_K8S_IMAGE_PULL_SECRETS comma-separated image pull secret names
- HELICAL_AIRFLOW_K8S_IN_CLUSTER       `true` (default: the worker runs in the cluster) or `false` (kube config)
- HELICAL_AIRFLOW_K8S_CONFIG_FILE      kube config file when not in the cluster
- HELICAL_AIRFLOW_K8S_STARTUP_TIMEOUT  seconds a pod may stay Pending (image pull, GPU node scale-up; default 600)
- HELICAL_AIRFLOW_K8S_USER             uid the runner runs as (default 50000, the runner image's user; gid 0)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def data_dir() -> Path:
    return Path(os.environ.get("HELICAL_AIRFLOW_DATA_DIR", "data")).resolve()


def output_dir() -> Path:
    configured = os.environ.get("HELICAL_AIRFLOW_OUTPUT_DIR")
    return Path(configured).resolve() if configured else data_dir() / "outputs"


def cache_dir() -> str | None:
    return os.environ.get("HELICAL_AIRFLOW_CACHE_DIR") or None


def tracking_uri() -> str | None:
    return os.environ.get("MLFLOW_TRACKING_URI", "").strip() or None


def runner_python() -> str | None:
    """HELICAL_AIRFLOW_RUNNER_PYTHON: the Python of the environment the local launcher runs embed-shard in (default:
    the worker's own)."""
    return os.environ.get("HELICAL_AIRFLOW_RUNNER_PYTHON") or None


def statsd_target() -> tuple[str, str] | None:
    """HELICAL_AIRFLOW_STATSD_HOST / HELICAL_AIRFLOW_STATSD_PORT: where the runner sends its own metrics (off when
    the host is unset; the port defaults to 9125). The port is checked by telemetry.target()."""
    host = os.environ.get("HELICAL_AIRFLOW_STATSD_HOST", "").strip()
    return (host, os.environ.get("HELICAL_AIRFLOW_STATSD_PORT", "").strip()) if host else None


def recycle_bounds(memory_cap_gb: float) -> tuple[float, int]:
    """When a long-running embed process hands over to a fresh one (embed.Recycle): (max RSS in MB, max shards).
    HELICAL_AIRFLOW_RUNNER_MAX_RSS_MB (default: 90% of the model's memory cap) and HELICAL_AIRFLOW_RUNNER_MAX_SHARDS
    (default 0: no bound)."""
    max_rss = float(os.environ.get("HELICAL_AIRFLOW_RUNNER_MAX_RSS_MB") or 0) or memory_cap_gb * 1024 * 0.9
    return max_rss, int(os.environ.get("HELICAL_AIRFLOW_RUNNER_MAX_SHARDS") or 0)


def task_slots() -> int:
    """HELICAL_AIRFLOW_TASK_SLOTS: how many embed tasks of one run may run at once across the workers (default:
    the Celery worker concurrency, AIRFLOW__CELERY__WORKER_CONCURRENCY, else 4). The plan groups its shards into
    at most this many tasks, so each task loads the model once for its group."""
    raw = os.environ.get("HELICAL_AIRFLOW_TASK_SLOTS") or os.environ.get("AIRFLOW__CELERY__WORKER_CONCURRENCY") or "4"
    return max(1, int(raw))


def max_shards_per_task() -> int:
    """HELICAL_AIRFLOW_MAX_SHARDS_PER_TASK: the most shards one embed task takes (default 25), so a retry or a
    slow worker holds back a bounded part of a large run."""
    return max(1, int(os.environ.get("HELICAL_AIRFLOW_MAX_SHARDS_PER_TASK") or 25))


#: helical's own model store (helical.utils.downloader.Downloader.download_via_name builds the same URLs)
HELICAL_MODELS_URL = "https://helicalpackage.s3.eu-west-2.amazonaws.com"


def models_url() -> str:
    return (os.environ.get("HELICAL_AIRFLOW_MODELS_URL") or HELICAL_MODELS_URL).rstrip("/")


DEFAULT_DOCKER_IMAGE = "helical-airflow-runner:0.1.0"


@dataclass
class DockerSettings:
    image: str = DEFAULT_DOCKER_IMAGE
    gpu_image: str | None = None  # None: the CPU image
    docker_url: str = "unix:///var/run/docker.sock"
    host_data_dir: str | None = None
    host_output_dir: str | None = None
    cache_source: str | None = None
    network: str | None = None
    user: str | None = None
    extra_mounts: list[str] = field(default_factory=list)
    all_gpus: bool = False

    @classmethod
    def from_env(cls) -> DockerSettings:
        return docker_settings()


def docker_settings() -> DockerSettings:
    env = os.environ.get
    return DockerSettings(
        image=env("HELICAL_AIRFLOW_DOCKER_IMAGE", DEFAULT_DOCKER_IMAGE),
        gpu_image=env("HELICAL_AIRFLOW_DOCKER_GPU_IMAGE") or None,
        docker_url=env("HELICAL_AIRFLOW_DOCKER_URL") or env("DOCKER_HOST") or "unix:///var/run/docker.sock",
        host_data_dir=env("HELICAL_AIRFLOW_HOST_DATA_DIR"),
        host_output_dir=env("HELICAL_AIRFLOW_HOST_OUTPUT_DIR"),
        cache_source=env("HELICAL_AIRFLOW_DOCKER_CACHE"),
        network=env("HELICAL_AIRFLOW_DOCKER_NETWORK") or None,
        user=env("HELICAL_AIRFLOW_DOCKER_USER") or None,
        extra_mounts=[m for m in env("HELICAL_AIRFLOW_DOCKER_EXTRA_MOUNTS", "").split(",") if m.strip()],
        all_gpus=env("HELICAL_AIRFLOW_DOCKER_GPUS", "") == "all",
    )


#: GPU nodes are usually tainted so only pods that ask for a GPU land there (GKE, EKS and the GPU operator do it)
GPU_TOLERATION: dict[str, Any] = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


@dataclass
class KubernetesSettings:
    namespace: str = "helical-airflow"
    image: str = "helical-airflow/runner:0.1.0"
    gpu_image: str = "helical-airflow/runner:0.1.0-cuda"
    data_pvc: str = "helical-data"
    output_pvc: str = "helical-outputs"
    cache_pvc: str | None = "helical-weights"
    node_selector: dict[str, str] = field(default_factory=dict)
    gpu_node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    gpu_tolerations: list[dict[str, Any]] = field(default_factory=lambda: [dict(GPU_TOLERATION)])
    cpu_request: str = "1"
    service_account: str | None = None
    image_pull_secrets: list[str] = field(default_factory=list)
    in_cluster: bool = True
    config_file: str | None = None
    startup_timeout: int = 600
    run_as_user: int = 50000


def _json_env(name: str, default: Any, kind: type) -> Any:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    from .errors import ConfigError

    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ConfigError("E530", f"{name} is not valid JSON: {exc}", f"set {name} to a JSON {kind.__name__}") from None
    if not isinstance(value, kind):
        raise ConfigError("E530", f"{name} must be a JSON {kind.__name__}", f"e.g. {name}='{json.dumps(default)}'")
    return value


def kubernetes_settings() -> KubernetesSettings:
    env = os.environ.get
    base = KubernetesSettings()
    return KubernetesSettings(
        namespace=env("HELICAL_AIRFLOW_K8S_NAMESPACE") or base.namespace,
        image=env("HELICAL_AIRFLOW_K8S_IMAGE") or base.image,
        gpu_image=env("HELICAL_AIRFLOW_K8S_GPU_IMAGE") or base.gpu_image,
        data_pvc=env("HELICAL_AIRFLOW_K8S_DATA_PVC") or base.data_pvc,
        output_pvc=env("HELICAL_AIRFLOW_K8S_OUTPUT_PVC") or base.output_pvc,
        cache_pvc=env("HELICAL_AIRFLOW_K8S_CACHE_PVC", base.cache_pvc) or None,
        node_selector=_json_env("HELICAL_AIRFLOW_K8S_NODE_SELECTOR", {}, dict),
        gpu_node_selector=_json_env("HELICAL_AIRFLOW_K8S_GPU_NODE_SELECTOR", {}, dict),
        tolerations=_json_env("HELICAL_AIRFLOW_K8S_TOLERATIONS", [], list),
        gpu_tolerations=_json_env("HELICAL_AIRFLOW_K8S_GPU_TOLERATIONS", base.gpu_tolerations, list),
        cpu_request=env("HELICAL_AIRFLOW_K8S_CPU_REQUEST") or base.cpu_request,
        service_account=env("HELICAL_AIRFLOW_K8S_SERVICE_ACCOUNT") or None,
        image_pull_secrets=[
            s.strip() for s in env("HELICAL_AIRFLOW_K8S_IMAGE_PULL_SECRETS", "").split(",") if s.strip()
        ],
        in_cluster=env("HELICAL_AIRFLOW_K8S_IN_CLUSTER", "true").lower() not in ("0", "false", "no"),
        config_file=env("HELICAL_AIRFLOW_K8S_CONFIG_FILE") or None,
        startup_timeout=int(env("HELICAL_AIRFLOW_K8S_STARTUP_TIMEOUT") or base.startup_timeout),
        run_as_user=int(env("HELICAL_AIRFLOW_K8S_USER") or base.run_as_user),
    )
