"""Where the local stack lives and which ports it uses; every value can be set from the environment.

Ports are private by default (28xxx) so the stack does not clash with a system Postgres, Redis or
Airflow. Each port reads `HELICAL_STACK_<NAME>_PORT`, e.g. `HELICAL_STACK_API_PORT=8080`.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .. import gpus, settings

#: service port name -> default (override with HELICAL_STACK_<NAME>_PORT)
DEFAULT_PORTS: dict[str, int] = {
    "postgres": 28432,
    "redis": 28379,
    "api": 28080,
    "scheduler_health": 28974,
    "worker_log": 28793,
    "worker_log_2": 28795,  # the second worker's log server (HELICAL_STACK_WORKERS=2)
    "trigger_log": 28794,
    "statsd": 28125,  # UDP: where Airflow and the runner send StatsD (the monitoring bridge listens here)
}

REPO_ROOT = Path(__file__).resolve().parents[3]


def _env(name: str, default: str) -> str:
    return settings.get().stack(name, default)


def _flag(name: str, default: bool) -> bool:
    return _env(name, "1" if default else "0").lower() in ("1", "true", "yes", "on")


@dataclass
class StackConfig:
    """Everything `stack up` needs to know; build it with `StackConfig.from_env()`."""

    state_dir: Path
    host: str = "127.0.0.1"
    ports: dict[str, int] = field(default_factory=dict)
    data_dir: Path = field(default_factory=settings.data_dir)
    output_dir: Path = field(default_factory=settings.output_dir)
    cache_dir: str | None = field(default_factory=settings.cache_dir)
    dags_folder: Path = REPO_ROOT / "airflow" / "dags"
    python: str = sys.executable  # the Python environment with Airflow and helical-airflow
    worker_concurrency: int = 2
    worker_queues: tuple[str, ...] = ("default", "gpu")
    worker_name: str = "helical-stack@%h"  # Celery node name (%h: this host); recorded with every task result
    #: one slot per GPU of this machine (gpus.py), so N shard groups run at once, each on its own GPU
    gpu_pool_slots: int = 1
    #: Celery workers: the second (and any further) one has its own working folder, weights cache and log server
    #: port and shares only the broker, the metadata DB and the outputs with the first (stack/services.py)
    workers: int = 1
    #: weights caches of workers 2, 3, ... (default: `<state>/worker-<n>/cache`, filled by `models download` or
    #: `models fixture` with --cache-dir); worker 1 uses `cache_dir`
    worker_cache_dirs: tuple[str, ...] = ()
    statsd_host: str = "127.0.0.1"
    monitoring: bool = True  # also start the monitoring services (stack/monitoring.py)
    #: a service gets this long to answer its health check: the api-server took over 120 s on the 2-core machine at
    #: load 11 (bench/load.py, the e2e tests); a healthy start waits no longer for it
    ready_timeout_s: float = 300.0
    #: umask of the Airflow services: outputs readable by the owner's group, not by others (HELICAL_STACK_UMASK)
    umask: int = 0o027

    @classmethod
    def from_env(cls, **overrides: object) -> StackConfig:
        cfg = cls(
            state_dir=Path(_env("STATE_DIR", str(REPO_ROOT / ".state" / "stack"))).resolve(),
            host=_env("HOST", "127.0.0.1"),
            ports={name: int(_env(f"{name.upper()}_PORT", str(port))) for name, port in DEFAULT_PORTS.items()},
            worker_concurrency=int(_env("WORKER_CONCURRENCY", "") or max(2, gpus.count())),
            gpu_pool_slots=int(_env("GPU_POOL_SLOTS", "") or gpus.default_pool_slots()),
            workers=int(_env("WORKERS", "1")),
            statsd_host=_env("STATSD_HOST", "127.0.0.1"),
            monitoring=_flag("MONITORING", True),
            python=_env("PYTHON", sys.executable),
            umask=int(_env("UMASK", "027"), 8),
        )
        for key, value in overrides.items():
            if value is not None:
                setattr(cfg, key, value)
        cfg.state_dir = Path(cfg.state_dir).resolve()
        return cfg

    def port(self, name: str, default: int | None = None) -> int:
        """A named port: from `ports`, else HELICAL_STACK_<NAME>_PORT, else `default` (for other modules' services)."""
        if name in self.ports:
            return self.ports[name]
        if default is None:
            raise KeyError(f"no port named {name!r} and no default given")
        return int(_env(f"{name.upper()}_PORT", str(default)))

    # Layout of the state directory: one place for PID files, logs, secrets and service data.
    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def secrets_file(self) -> Path:
        return self.state_dir / "secrets.json"

    @property
    def airflow_home(self) -> Path:
        return self.state_dir / "airflow"

    @property
    def pg_data(self) -> Path:
        return self.state_dir / "postgres" / "data"

    @property
    def redis_dir(self) -> Path:
        return self.state_dir / "redis"

    def worker_dir(self, n: int) -> Path:
        """Worker n's own working folder (n >= 2): its cwd, temp files, Airflow home, sequence indexes."""
        return self.state_dir / f"worker-{n}"

    def worker_cache(self, n: int) -> str | None:
        """Worker n's weights cache: `cache_dir` for the first, its own folder for the others."""
        if n == 1:
            return self.cache_dir
        given = self.worker_cache_dirs[n - 2] if len(self.worker_cache_dirs) >= n - 1 else None
        return str(Path(given).resolve()) if given else str(self.worker_dir(n) / "cache")

    @property
    def gpu_lock_dir(self) -> Path:
        """The per-GPU leases (gpus.py) of every worker of the stack: they share this machine's GPUs."""
        return self.state_dir / "gpu-leases"

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.ports['api']}"

    def bin(self, name: str) -> str | None:
        """A console script of the configured Python environment (airflow, helical-airflow), else PATH."""
        candidate = Path(self.python).parent / name
        return str(candidate) if candidate.is_file() else shutil.which(name)
