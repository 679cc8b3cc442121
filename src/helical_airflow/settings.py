"""Every setting the package reads from the environment, in one frozen object read once: `settings.get()`.

The CLI, the DAG, the launchers, the stack and the containers agree because they all read this object; no other
module of `helical_airflow` reads `os.environ` (tests/unit/test_settings.py greps for it), except the few that
build a child process's environment from a copy of it. `reload()` reads the environment again (the tests do, after
changing a variable); a child process (embed-shard, a container, a pod) reads its own environment when it starts.

The table of variables below is generated from `VARIABLES` (the one list: a variable not in it cannot be read),
and so is docs/settings.md (scripts/gen_settings_docs.py; tests/unit/test_settings.py keeps it current).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .errors import ConfigError


@dataclass(frozen=True)
class Variable:
    """One environment variable the package reads: its name, its default (as documented) and what it does."""

    name: str
    default: str
    help: str
    group: str = "core"


#: helical's own model store (helical.utils.downloader.Downloader.download_via_name builds the same URLs)
HELICAL_MODELS_URL = "https://helicalpackage.s3.eu-west-2.amazonaws.com"
DEFAULT_DOCKER_IMAGE = "helical-airflow-runner:0.1.0"
DEFAULT_LAUNCHER = "local"
#: Celery worker concurrency assumed when AIRFLOW__CELERY__WORKER_CONCURRENCY is unset (the Helm chart puts it in
#: airflow.cfg, not the environment). One default for both readers: the plan groups a run's shards for this many
#: tasks at once (task_slots), so the local launcher must share the worker's cores among as many shard processes
#: (thread_limits). The local launcher used to assume 1 instead: with the plan's 4 groups running side by side on
#: one worker, each shard process then started one math thread per core (4x the cores).
DEFAULT_WORKER_CONCURRENCY = 4
#: the variables a container or pod gets from the worker as they are (the others are set by the launcher itself)
CONTAINER_ENV = ("HELICAL_AIRFLOW_STATSD_HOST", "HELICAL_AIRFLOW_STATSD_PORT", "MLFLOW_TRACKING_URI")

VARIABLES: tuple[Variable, ...] = (
    Variable("HELICAL_AIRFLOW_DATA_DIR", "./data",
             "input data folder (mounted read-only at /opt/data in containers)"),
    Variable("HELICAL_AIRFLOW_OUTPUT_DIR", "<data dir>/outputs", "where runs are written (compose: /opt/outputs)"),
    Variable("HELICAL_AIRFLOW_CACHE_DIR", "helical's own (~/.cache/helical/models)",
             "weights cache root (becomes helical's CACHE_DIR_HELICAL_PREFIX)"),
    Variable("MLFLOW_TRACKING_URI", "unset: no tracking",
             "MLflow tracking server (e.g. http://127.0.0.1:5000); the CLI's --tracking-uri overrides it"),
    Variable("HELICAL_AIRFLOW_MLFLOW_EXPERIMENT", "helical-airflow", "MLflow experiment of the runs"),
    Variable("HELICAL_AIRFLOW_MODELS_URL", HELICAL_MODELS_URL,
             "where `models download` fetches model files by their cache path (a mirror or a test server)"),
    Variable("HELICAL_AIRFLOW_LAUNCHER", DEFAULT_LAUNCHER,
             "the DAG's default `launcher` Param: local, docker or kubernetes"),
    Variable("HELICAL_AIRFLOW_LOG_FORMAT", "rich", "rich or json (one object per line); the CLI's --log-format wins"),
    Variable("HELICAL_AIRFLOW_REPORT_UMAP", "1", "0/false/no/off: the report leaves the UMAP out (~15-20 s saved)"),
    Variable("HELICAL_AIRFLOW_QUALITY_THRESHOLDS", "the model's own",
             "quality gate thresholds, JSON (e.g. {\"max_knn_drop_vs_pca\": 0.05}; E403 when invalid)"),
    Variable("HELICAL_AIRFLOW_PRECISION_THRESHOLDS", "the model's own (ResourceProfile.agreement)",
             "floors on an fp16/bf16 run's agreement with fp32, JSON (e.g. {\"min_cosine\": 0.99, "
             "\"min_knn_overlap\": 0.8}; E405 when invalid): docs/reliability.md"),
    Variable("HELICAL_AIRFLOW_VALIDATE_TIMEOUT_S", "6 s + the file size at 25 MiB/s",
             "deadline of the bounded input inspection"),
    Variable("HELICAL_AIRFLOW_VALIDATE_MEMORY_MB", "4096", "memory budget of the bounded input inspection"),
    Variable("HELICAL_AIRFLOW_SEQ_INDEX_DIR", "$XDG_CACHE_HOME/helical-airflow/seq-index",
             "where sequence inputs' record offset indexes are cached"),
    Variable("XDG_CACHE_HOME", "~/.cache", "the user's cache folder (the default of the index folder)"),
    Variable("HELICAL_AIRFLOW_OBJECT_CACHE_DIR", "$XDG_CACHE_HOME/helical-airflow/objects",
             "object storage: verified local copies of s3://... inputs and the work folders of runs written to a "
             "URL (objstore.py)", "storage"),
    Variable("HELICAL_AIRFLOW_STORAGE_ENDPOINT_URL", "unset: the protocol's own (AWS_ENDPOINT_URL for s3)",
             "endpoint of an S3-compatible server (SeaweedFS, MinIO, Ceph)", "storage"),
    Variable("HELICAL_AIRFLOW_STORAGE_CONN_ID", "unset: the standard AWS variables and files",
             "an Airflow connection holding the object store's credentials (login: key, password: secret, extra: "
             "endpoint_url); resolved in the task, never logged", "storage"),
    Variable("HELICAL_AIRFLOW_STATSD_HOST", "unset: no runner metrics", "where the runner sends its own StatsD"),
    Variable("HELICAL_AIRFLOW_STATSD_PORT", "9125", "its StatsD port (E604 when not a port)"),
    Variable("HELICAL_AIRFLOW_RUNNER_PYTHON", "the worker's own",
             "the Python of the environment the local launcher runs embed-shard in", "runner"),
    Variable("HELICAL_AIRFLOW_RUNNER_MAX_RSS_MB", "90% of the model's memory cap",
             "a long-running embed process hands over to a fresh one past this RSS", "runner"),
    Variable("HELICAL_AIRFLOW_RUNNER_MAX_SHARDS", "0 (no bound)", "... or after this many shards", "runner"),
    Variable("HELICAL_AIRFLOW_TASK_SLOTS", "the worker concurrency",
             "how many embed tasks of one run may run at once; the plan groups its shards into at most this many "
             "tasks, so each task loads the model once for its group", "runner"),
    Variable("AIRFLOW__CELERY__WORKER_CONCURRENCY", str(DEFAULT_WORKER_CONCURRENCY),
             "Celery worker concurrency (Airflow's own setting): the default of the task slots, and how many shard "
             "processes the local launcher shares the worker's cores among", "runner"),
    Variable("HELICAL_AIRFLOW_GPUS", "auto",
             "this worker's GPUs, one shard group each (gpus.py): auto (CUDA_VISIBLE_DEVICES, else `nvidia-smi -L`), "
             "a count (the first N of CUDA_VISIBLE_DEVICES when that restricts the worker), or device ids "
             "(`0,2,5`); 0: pin nothing (E531 when invalid)", "runner"),
    Variable("HELICAL_AIRFLOW_GPU_LOCK_DIR", "<temp dir>/helical-airflow-gpu-leases",
             "where the per-GPU leases live (machine-local: every worker of the machine must use the same one)",
             "runner"),
    Variable("CUDA_VISIBLE_DEVICES", "unset", "the GPUs the worker may use (`HELICAL_AIRFLOW_GPUS=auto` leases "
             "those); the local launcher sets it for each embed process to its leased GPU", "runner"),
    Variable("HELICAL_AIRFLOW_GPU_ID", "unset", "set by the local and docker launchers for an embed process: "
             "the machine's id of the GPU leased for it, which its manifest records as the shard's `gpu` (inside a "
             "container that GPU is device 0)", "runner"),
    Variable("NVIDIA_VISIBLE_DEVICES", "unset", "set by the NVIDIA container runtime (Docker, a Kubernetes device "
             "plugin): the GPU(s) given to the container; a pod's one GPU is recorded as its shards' `gpu`",
             "runner"),
    Variable("HELICAL_AIRFLOW_WORKER_CACHE_DIR", "unset: the plan's cache",
             "this worker's own weights cache: its embed processes read the plan's weights from here, not from "
             "the planning worker's cache (E532 when a file is missing); the local stack sets it per worker",
             "runner"),
    Variable("HELICAL_AIRFLOW_MAX_SHARDS_PER_TASK", "25",
             "the most shards one embed task takes (a retry holds back a bounded part of a large run)", "runner"),
    Variable("OMP_NUM_THREADS", "cores / concurrent shards",
             "set: the local launcher leaves the shards' math threads alone", "runner"),
    Variable("CXX", "g++", "C++ compiler TranscriptFormer needs on a CPU host (torch inductor)", "runner"),
    Variable("HELICAL_AIRFLOW_DOCKER_IMAGE", DEFAULT_DOCKER_IMAGE, "runner image for CPU shards", "docker"),
    Variable("HELICAL_AIRFLOW_DOCKER_GPU_IMAGE", "the CPU image", "runner image for GPU shards (CUDA)", "docker"),
    Variable("HELICAL_AIRFLOW_DOCKER_URL", "$DOCKER_HOST, else unix:///var/run/docker.sock",
             "Docker API (compose: tcp://docker-socket-proxy:2375, profile `docker`)", "docker"),
    Variable("DOCKER_HOST", "unset", "Docker's own variable: the default of HELICAL_AIRFLOW_DOCKER_URL", "docker"),
    Variable("HELICAL_AIRFLOW_HOST_DATA_DIR", "the worker's path", "the data folder as the engine's host sees it",
             "docker"),
    Variable("HELICAL_AIRFLOW_HOST_OUTPUT_DIR", "the worker's path", "the output folder as the engine's host sees it",
             "docker"),
    Variable("HELICAL_AIRFLOW_DOCKER_CACHE", "the worker's cache path", "weights cache: a volume name or host folder",
             "docker"),
    Variable("HELICAL_AIRFLOW_DOCKER_NETWORK", "unset", "network mode (e.g. the Compose network, `none`)", "docker"),
    Variable("HELICAL_AIRFLOW_DOCKER_USER", "unset", "user to run as (uid:gid)", "docker"),
    Variable("HELICAL_AIRFLOW_DOCKER_EXTRA_MOUNTS", "none",
             "comma-separated `source:target[:ro]` binds (development images)", "docker"),
    Variable("HELICAL_AIRFLOW_DOCKER_GPUS", "GPU shards only", "`all`: every shard gets the GPU image and every GPU",
             "docker"),
    Variable("HELICAL_AIRFLOW_K8S_NAMESPACE", "helical-airflow", "namespace of the shard pods", "kubernetes"),
    Variable("HELICAL_AIRFLOW_K8S_IMAGE", "helical-airflow/runner:0.1.0", "runner image for CPU shards",
             "kubernetes"),
    Variable("HELICAL_AIRFLOW_K8S_GPU_IMAGE", "helical-airflow/runner:0.1.0-cuda", "runner image for GPU shards",
             "kubernetes"),
    Variable("HELICAL_AIRFLOW_K8S_DATA_PVC", "helical-data", "PVC of the inputs, mounted read-only", "kubernetes"),
    Variable("HELICAL_AIRFLOW_K8S_OUTPUT_PVC", "helical-outputs", "PVC of the outputs", "kubernetes"),
    Variable("HELICAL_AIRFLOW_K8S_CACHE_PVC", "helical-weights", "PVC of the weights cache (empty: no cache volume)",
             "kubernetes"),
    Variable("HELICAL_AIRFLOW_K8S_NODE_SELECTOR", "none", "node selector of CPU pods, JSON object (E530)",
             "kubernetes"),
    Variable("HELICAL_AIRFLOW_K8S_GPU_NODE_SELECTOR", "none", "node selector of GPU pods, JSON object",
             "kubernetes"),
    Variable("HELICAL_AIRFLOW_K8S_TOLERATIONS", "none", "tolerations of CPU pods, JSON list", "kubernetes"),
    Variable("HELICAL_AIRFLOW_K8S_GPU_TOLERATIONS", "the `nvidia.com/gpu` taint", "tolerations of GPU pods",
             "kubernetes"),
    Variable("HELICAL_AIRFLOW_K8S_CPU_REQUEST", "1", "CPU request of a shard pod", "kubernetes"),
    Variable("HELICAL_AIRFLOW_K8S_SERVICE_ACCOUNT", "the namespace's default", "service account of the pods",
             "kubernetes"),
    Variable("HELICAL_AIRFLOW_K8S_IMAGE_PULL_SECRETS", "none", "comma-separated image pull secret names",
             "kubernetes"),
    Variable("HELICAL_AIRFLOW_K8S_IN_CLUSTER", "true", "`false`: use a kube config (the worker is outside the cluster)",
             "kubernetes"),
    Variable("HELICAL_AIRFLOW_K8S_CONFIG_FILE", "unset", "kube config file when not in the cluster", "kubernetes"),
    Variable("HELICAL_AIRFLOW_K8S_STARTUP_TIMEOUT", "600", "seconds a pod may stay Pending (image pull, scale-up)",
             "kubernetes"),
    Variable("HELICAL_AIRFLOW_K8S_USER", "50000", "uid the runner runs as (gid 0)", "kubernetes"),
    Variable("HELICAL_STACK_STATE_DIR", ".state/stack", "the local stack's state folder (`stack up --state-dir`)",
             "stack"),
    Variable("HELICAL_STACK_HOST", "127.0.0.1", "the address its services bind", "stack"),
    Variable("HELICAL_STACK_<NAME>_PORT", "28xxx", "a service's port, e.g. HELICAL_STACK_API_PORT", "stack"),
    Variable("HELICAL_STACK_WORKER_CONCURRENCY", "2", "its Celery worker's concurrency", "stack"),
    Variable("HELICAL_STACK_GPU_POOL_SLOTS", "one per GPU (HELICAL_AIRFLOW_GPUS), at least 1",
             "slots of its `gpu_pool`", "stack"),
    Variable("HELICAL_STACK_WORKERS", "1", "Celery workers it starts (2: a second one with its own working folder "
             "and weights cache, sharing only the broker, the database and the outputs)", "stack"),
    Variable("HELICAL_STACK_STATSD_HOST", "127.0.0.1", "where its services send StatsD", "stack"),
    Variable("HELICAL_STACK_MONITORING", "1", "0: no monitoring services", "stack"),
    Variable("HELICAL_STACK_MLFLOW", "1", "0: no MLflow server", "stack"),
    Variable("HELICAL_STACK_PYTHON", "this Python", "the Python environment with Airflow and helical-airflow",
             "stack"),
    Variable("HELICAL_STACK_UMASK", "027", "umask of its Airflow services", "stack"),
    Variable("HELICAL_STACK_STATSD_CAPTURE", "unset", "a file the StatsD bridge appends every line it receives to",
             "stack"),
    Variable("HELICAL_AIRFLOW_MLFLOW_SERVER", "./.venv-mlflow/bin/mlflow", "the `mlflow` program with the server",
             "stack"),
    Variable("AIRFLOW__LOGGING__WORKER_LOG_SERVER_HOST", "every interface",
             "the address the stack's log servers bind (Airflow's own setting)", "stack"),
)  # fmt: skip

#: the variables the package sets in its own process for the libraries it drives (never read back as settings)
EXPORTED: dict[str, str] = {
    "CACHE_DIR_HELICAL_PREFIX": "helical's weights cache prefix, from the run's cache dir, before helical is imported",
    "HF_HUB_OFFLINE": "1 while a model loads from its local folder: nothing is downloaded",
    "TRANSFORMERS_OFFLINE": "1, likewise",
    "HF_HUB_CACHE": "Tahoe's and Evo 2's hub cache inside the weights cache",
    "FLASH_ATTENTION_TRITON_AMD_ENABLE": "TRUE when flash-attn has no CUDA kernels (Tahoe on a CPU)",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0 while tracking, unless set (one try)",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10 while tracking, unless set",
}

_KNOWN = {v.name for v in VARIABLES}
_STACK_PORT = re.compile(r"HELICAL_STACK_[A-Z0-9_]+_PORT")


def _json(raw: str, name: str, default: Any, kind: type) -> Any:
    if not raw.strip():
        return default
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ConfigError("E530", f"{name} is not valid JSON: {exc}", f"set {name} to a JSON {kind.__name__}") from None
    if not isinstance(value, kind):
        raise ConfigError("E530", f"{name} must be a JSON {kind.__name__}", f"e.g. {name}='{json.dumps(default)}'")
    return value


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


def _off(raw: str) -> bool:
    return raw.strip().lower() in ("0", "false", "no", "off")


@dataclass(frozen=True)
class Settings:
    """The environment, read once (`Settings.read(os.environ)`); every field is what its variable says (VARIABLES).

    Numbers and JSON are parsed where they are used (their errors stay where they were: E530, E604, E403), from
    `raw`, the documented variables that are set."""

    raw: Mapping[str, str]

    def env(self, name: str, default: str = "") -> str:
        """A documented variable's value (unset: `default`); an undocumented name is a bug, not a setting."""
        if name not in _KNOWN and not _STACK_PORT.fullmatch(name):
            raise KeyError(f"{name} is not in settings.VARIABLES: document it there first")
        return self.raw.get(name, default)

    @classmethod
    def read(cls, environ: Mapping[str, str]) -> Settings:
        wanted = {k: v for k, v in environ.items() if k in _KNOWN or _STACK_PORT.fullmatch(k)}
        return cls(raw=MappingProxyType(wanted))

    # -- folders, tracking, models ---------------------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return Path(self.env("HELICAL_AIRFLOW_DATA_DIR", "data")).resolve()

    @property
    def output_dir(self) -> Path:
        configured = self.env("HELICAL_AIRFLOW_OUTPUT_DIR")
        return Path(configured).resolve() if configured else self.data_dir / "outputs"

    @property
    def cache_dir(self) -> str | None:
        return self.env("HELICAL_AIRFLOW_CACHE_DIR") or None

    @property
    def tracking_uri(self) -> str | None:
        return self.env("MLFLOW_TRACKING_URI").strip() or None

    @property
    def mlflow_experiment(self) -> str:
        return self.env("HELICAL_AIRFLOW_MLFLOW_EXPERIMENT", "helical-airflow")

    @property
    def models_url(self) -> str:
        return (self.env("HELICAL_AIRFLOW_MODELS_URL") or HELICAL_MODELS_URL).rstrip("/")

    @property
    def launcher(self) -> str:
        return self.env("HELICAL_AIRFLOW_LAUNCHER", DEFAULT_LAUNCHER)

    @property
    def log_format(self) -> str:
        return self.env("HELICAL_AIRFLOW_LOG_FORMAT")

    @property
    def report_umap(self) -> bool:
        return not _off(self.env("HELICAL_AIRFLOW_REPORT_UMAP", "1"))

    @property
    def quality_thresholds(self) -> str:
        return self.env("HELICAL_AIRFLOW_QUALITY_THRESHOLDS").strip()

    @property
    def precision_thresholds(self) -> str:
        return self.env("HELICAL_AIRFLOW_PRECISION_THRESHOLDS").strip()

    @property
    def validate_timeout_s(self) -> float | None:
        configured = self.env("HELICAL_AIRFLOW_VALIDATE_TIMEOUT_S")
        return float(configured) if configured else None

    @property
    def validate_memory_mb(self) -> int | None:
        return int(self.env("HELICAL_AIRFLOW_VALIDATE_MEMORY_MB") or 0) or None

    @property
    def seq_index_dir(self) -> Path:
        configured = self.env("HELICAL_AIRFLOW_SEQ_INDEX_DIR")
        if configured:
            return Path(configured)
        return Path(self.env("XDG_CACHE_HOME") or Path.home() / ".cache") / "helical-airflow" / "seq-index"

    @property
    def object_cache_dir(self) -> Path:
        configured = self.env("HELICAL_AIRFLOW_OBJECT_CACHE_DIR")
        if configured:
            return Path(configured).resolve()
        return Path(self.env("XDG_CACHE_HOME") or Path.home() / ".cache") / "helical-airflow" / "objects"

    @property
    def storage_endpoint_url(self) -> str | None:
        return self.env("HELICAL_AIRFLOW_STORAGE_ENDPOINT_URL").strip() or None

    @property
    def storage_conn_id(self) -> str | None:
        return self.env("HELICAL_AIRFLOW_STORAGE_CONN_ID").strip() or None

    @property
    def statsd_target(self) -> tuple[str, str] | None:
        """(host, port as given) when the host is set; telemetry.target() checks the port (E604)."""
        host = self.env("HELICAL_AIRFLOW_STATSD_HOST").strip()
        return (host, self.env("HELICAL_AIRFLOW_STATSD_PORT").strip()) if host else None

    # -- shards, tasks, the local launcher -------------------------------------------------------------------------
    @property
    def runner_python(self) -> str | None:
        return self.env("HELICAL_AIRFLOW_RUNNER_PYTHON") or None

    @property
    def worker_concurrency(self) -> int:
        return int(self.env("AIRFLOW__CELERY__WORKER_CONCURRENCY") or DEFAULT_WORKER_CONCURRENCY)

    @property
    def task_slots(self) -> int:
        return max(1, int(self.env("HELICAL_AIRFLOW_TASK_SLOTS") or self.worker_concurrency))

    @property
    def max_shards_per_task(self) -> int:
        return max(1, int(self.env("HELICAL_AIRFLOW_MAX_SHARDS_PER_TASK") or 25))

    @property
    def gpus(self) -> str:
        return self.env("HELICAL_AIRFLOW_GPUS", "auto") or "auto"

    @property
    def gpu_lock_dir(self) -> Path:
        configured = self.env("HELICAL_AIRFLOW_GPU_LOCK_DIR")
        return Path(configured) if configured else Path(tempfile.gettempdir()) / "helical-airflow-gpu-leases"

    @property
    def worker_cache_dir(self) -> str | None:
        return self.env("HELICAL_AIRFLOW_WORKER_CACHE_DIR") or None

    @property
    def omp_num_threads(self) -> str | None:
        return self.raw.get("OMP_NUM_THREADS")

    @property
    def cxx(self) -> str:
        return self.env("CXX") or "g++"

    # -- the stack ---------------------------------------------------------------------------------------------------
    def stack(self, name: str, default: str) -> str:
        """HELICAL_STACK_<name>, else `default`."""
        return self.env(f"HELICAL_STACK_{name}", default)


_current: Settings | None = None


def get() -> Settings:
    """The settings, read from the environment on first use."""
    global _current
    if _current is None:
        _current = Settings.read(os.environ)
    return _current


def reload() -> Settings:
    """Read the environment again (after a test changed it)."""
    global _current
    _current = None
    return get()


# -- the functions the package has always called (each reads get()) ----------------------------------------------------
def data_dir() -> Path:
    return get().data_dir


def output_dir() -> Path:
    return get().output_dir


def cache_dir() -> str | None:
    return get().cache_dir


def tracking_uri() -> str | None:
    return get().tracking_uri


def runner_python() -> str | None:
    return get().runner_python


def statsd_target() -> tuple[str, str] | None:
    return get().statsd_target


def recycle_bounds(memory_cap_gb: float) -> tuple[float, int]:
    """When a long-running embed process hands over to a fresh one (embed.Recycle): (max RSS in MB, max shards)."""
    s = get()
    max_rss = float(s.env("HELICAL_AIRFLOW_RUNNER_MAX_RSS_MB") or 0) or memory_cap_gb * 1024 * 0.9
    return max_rss, int(s.env("HELICAL_AIRFLOW_RUNNER_MAX_SHARDS") or 0)


def task_slots() -> int:
    return get().task_slots


def max_shards_per_task() -> int:
    return get().max_shards_per_task


def models_url() -> str:
    return get().models_url


def docker_settings() -> DockerSettings:
    env = get().env
    return DockerSettings(
        image=env("HELICAL_AIRFLOW_DOCKER_IMAGE", DEFAULT_DOCKER_IMAGE),
        gpu_image=env("HELICAL_AIRFLOW_DOCKER_GPU_IMAGE") or None,
        docker_url=env("HELICAL_AIRFLOW_DOCKER_URL") or env("DOCKER_HOST") or "unix:///var/run/docker.sock",
        host_data_dir=env("HELICAL_AIRFLOW_HOST_DATA_DIR") or None,
        host_output_dir=env("HELICAL_AIRFLOW_HOST_OUTPUT_DIR") or None,
        cache_source=env("HELICAL_AIRFLOW_DOCKER_CACHE") or None,
        network=env("HELICAL_AIRFLOW_DOCKER_NETWORK") or None,
        user=env("HELICAL_AIRFLOW_DOCKER_USER") or None,
        extra_mounts=[m for m in env("HELICAL_AIRFLOW_DOCKER_EXTRA_MOUNTS").split(",") if m.strip()],
        all_gpus=env("HELICAL_AIRFLOW_DOCKER_GPUS") == "all",
    )


def kubernetes_settings() -> KubernetesSettings:
    env = get().env
    base = KubernetesSettings()

    def json_env(name: str, default: Any, kind: type) -> Any:
        return _json(env(name), name, default, kind)

    return KubernetesSettings(
        namespace=env("HELICAL_AIRFLOW_K8S_NAMESPACE") or base.namespace,
        image=env("HELICAL_AIRFLOW_K8S_IMAGE") or base.image,
        gpu_image=env("HELICAL_AIRFLOW_K8S_GPU_IMAGE") or base.gpu_image,
        data_pvc=env("HELICAL_AIRFLOW_K8S_DATA_PVC") or base.data_pvc,
        output_pvc=env("HELICAL_AIRFLOW_K8S_OUTPUT_PVC") or base.output_pvc,
        cache_pvc=env("HELICAL_AIRFLOW_K8S_CACHE_PVC", base.cache_pvc or "") or None,
        node_selector=json_env("HELICAL_AIRFLOW_K8S_NODE_SELECTOR", {}, dict),
        gpu_node_selector=json_env("HELICAL_AIRFLOW_K8S_GPU_NODE_SELECTOR", {}, dict),
        tolerations=json_env("HELICAL_AIRFLOW_K8S_TOLERATIONS", [], list),
        gpu_tolerations=json_env("HELICAL_AIRFLOW_K8S_GPU_TOLERATIONS", base.gpu_tolerations, list),
        cpu_request=env("HELICAL_AIRFLOW_K8S_CPU_REQUEST") or base.cpu_request,
        service_account=env("HELICAL_AIRFLOW_K8S_SERVICE_ACCOUNT") or None,
        image_pull_secrets=[s.strip() for s in env("HELICAL_AIRFLOW_K8S_IMAGE_PULL_SECRETS").split(",") if s.strip()],
        in_cluster=env("HELICAL_AIRFLOW_K8S_IN_CLUSTER", "true").lower() not in ("0", "false", "no"),
        config_file=env("HELICAL_AIRFLOW_K8S_CONFIG_FILE") or None,
        startup_timeout=int(env("HELICAL_AIRFLOW_K8S_STARTUP_TIMEOUT") or base.startup_timeout),
        run_as_user=int(env("HELICAL_AIRFLOW_K8S_USER") or base.run_as_user),
    )


def container_env() -> dict[str, str]:
    """CONTAINER_ENV as the worker has them: what a container or pod gets from the worker's environment."""
    raw = get().raw
    return {name: raw[name] for name in CONTAINER_ENV if name in raw}


# -- this process's environment, for the libraries it drives and the children it starts --------------------------------
def export(name: str, value: str) -> None:
    """Set one of EXPORTED in this process (helical, huggingface_hub, MLflow read them)."""
    _exported(name)
    os.environ[name] = value


def export_default(name: str, value: str) -> None:
    """Set one of EXPORTED unless it is set already."""
    _exported(name)
    os.environ.setdefault(name, value)


@contextlib.contextmanager
def exported(name: str, value: str) -> Iterator[None]:
    """One of EXPORTED set for a block, then put back as it was."""
    _exported(name)
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def helical_cache_prefix() -> str | None:
    """CACHE_DIR_HELICAL_PREFIX as this process has it now (export() sets it; helical reads it once, at import)."""
    return os.environ.get("CACHE_DIR_HELICAL_PREFIX")


def child_env(**extra: str) -> dict[str, str]:
    """This process's whole environment plus `extra`: the environment of a child process (embed-shard, a service)."""
    return {**os.environ, **extra}


def _exported(name: str) -> None:
    if name not in EXPORTED:
        raise KeyError(f"{name} is not in settings.EXPORTED: document it there first")


# -- documentation: the module's docstring and docs/settings.md -------------------------------------------------------
GROUPS = {
    "core": "Folders, tracking, models, reports",
    "runner": "Shards, tasks and the local launcher",
    "storage": "Object storage (s3://, gs://, az:// inputs and outputs; docs/scale-out.md)",
    "docker": "The `docker` launcher (`docker_settings()`)",
    "kubernetes": "The `kubernetes` launcher (`kubernetes_settings()`); pods see the data PVC read-only at the "
    "worker's data folder, the outputs PVC at its output folder and the weights PVC at its cache folder, so "
    "plan.json's paths resolve unchanged",
    "stack": "The local stack (`helical-airflow stack up`)",
}


def markdown() -> str:
    """The table of every variable (docs/settings.md)."""
    lines = ["| variable | default | what it does |", "| --- | --- | --- |"]
    for group, title in GROUPS.items():
        lines.append(f"| **{title}** | | |")
        lines += [f"| `{v.name}` | {_cell(v.default)} | {_cell(v.help)} |" for v in VARIABLES if v.group == group]
    lines += ["", "Set by the package in its own process, for the libraries it drives (never read as settings):", "",
              "| variable | when |", "| --- | --- |"]  # fmt: skip
    lines += [f"| `{name}` | {why} |" for name, why in EXPORTED.items()]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("<", "&lt;").replace("|", "/")


def _plain() -> str:
    width = max(len(v.name) for v in VARIABLES)
    out: list[str] = []
    for group, title in GROUPS.items():
        out += ["", f"{title}:"]
        out += [f"- {v.name:<{width}} {v.help} (default: {v.default})" for v in VARIABLES if v.group == group]
    return "\n".join(out) + "\n"


__doc__ = (__doc__ or "") + _plain()
