"""Where the local stack lives and which ports it uses; every value can be set from the environment.

Ports are private by default (28xxx) so the stack does not clash with a system Postgres, Redis or
Airflow. Each port reads `HELICAL_STACK_<NAME>_PORT`, e.g. `HELICAL_STACK_API_PORT=8080`.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .. import settings

#: service port name -> default (override with HELICAL_STACK_<NAME>_PORT)
DEFAULT_PORTS: dict[str, int] = {
    "postgres": 28432,
    "redis": 28379,
    "api": 28080,
    "scheduler_health": 28974,
    "worker_log": 28793,
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
    gpu_pool_slots: int = 1
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
            worker_concurrency=int(_env("WORKER_CONCURRENCY", "2")),
            gpu_pool_slots=int(_env("GPU_POOL_SLOTS", "1")),
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

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.ports['api']}"

    def bin(self, name: str) -> str | None:
        """A console script of the configured Python environment (airflow, helical-airflow), else PATH."""
        candidate = Path(self.python).parent / name
        return str(candidate) if candidate.is_file() else shutil.which(name)
