"""The environment every Airflow process of the local stack runs with (also used by tests and benchmarks).

Shared settings come from `airflow/config/airflow.env` (the Compose stack reads the same file); this
module adds what is local: paths, private ports and the generated secrets.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import mlflow
from .config import REPO_ROOT, StackConfig

SHARED_ENV_FILE = REPO_ROOT / "airflow" / "config" / "airflow.env"


def read_env_file(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            env[key.strip()] = value.strip()
    return env


#: how fast the stack recovers from a lost process (docs/reliability.md). A worker killed mid-task: its tasks stop
#: heartbeating and are failed (then retried) after 60 s instead of 300. A task whose Celery message was lost (Redis
#: restarted before it persisted it): back in the queue after 120 s in "queued" instead of 600. The visibility timeout
#: must exceed the longest task (embed_shard: 4 h execution_timeout), or Redis redelivers running tasks: 5 h.
RECOVERY = {
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
    "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "120",
    "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "18000",
}


def passwords_file(cfg: StackConfig) -> Path:
    """The simple auth manager's password file (we write it first, so the password is ours, not Airflow's)."""
    return cfg.airflow_home / "passwords.json"


def database_url(cfg: StackConfig, secrets: dict[str, str], driver: str = "postgresql+psycopg2") -> str:
    return f"{driver}://airflow:{secrets['postgres_password']}@{cfg.host}:{cfg.ports['postgres']}/airflow"


def worker_env(cfg: StackConfig, secrets: dict[str, str], n: int) -> dict[str, str]:
    """Worker n's environment: the first worker's is airflow_env's; a further one (n >= 2) has its own working
    folder (Airflow home, temp files, sequence indexes), weights cache and log server port, and shares with the
    first only the broker, the metadata DB and the outputs. Task logs go to the stack's one log folder, so the UI
    reads them as the first worker's (on a cluster: Airflow's remote logging, or each worker's log server). Every
    worker, the first too, has its own object cache (`<state>/worker-<n>/objects`: staged inputs and the work folders
    of runs written to object storage), so a run whose output is a bucket shares nothing else between them; storage
    credentials reach the workers as the standard AWS variables of the environment `stack up` runs in (or the
    Airflow connection named by HELICAL_AIRFLOW_STORAGE_CONN_ID), never a Param."""
    env = airflow_env(cfg, secrets)
    env["HELICAL_AIRFLOW_OBJECT_CACHE_DIR"] = str(cfg.worker_dir(n) / "objects")
    if n == 1:
        return env
    home = cfg.worker_dir(n)
    cache = cfg.worker_cache(n)
    env.update(
        {
            "AIRFLOW_HOME": str(home / "airflow"),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(cfg.airflow_home / "logs"),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(cfg.port(f"worker_log_{n}", 28793 + 2 * (n - 1))),
            "TMPDIR": str(home / "tmp"),
            "HELICAL_AIRFLOW_SEQ_INDEX_DIR": str(home / "seq-index"),
        }
    )
    if cache:
        env["HELICAL_AIRFLOW_CACHE_DIR"] = env["HELICAL_AIRFLOW_WORKER_CACHE_DIR"] = cache
    return env


def airflow_env(cfg: StackConfig, secrets: dict[str, str]) -> dict[str, str]:
    ports = cfg.ports
    env = read_env_file(SHARED_ENV_FILE)
    env.update(
        {
            "AIRFLOW_HOME": str(cfg.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(cfg.dags_folder),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url(cfg, secrets),
            "AIRFLOW__CELERY__BROKER_URL": f"redis://:{secrets['redis_password']}@{cfg.host}:{ports['redis']}/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": database_url(cfg, secrets, "db+postgresql"),
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(cfg.worker_concurrency),
            "AIRFLOW__CORE__FERNET_KEY": secrets["fernet_key"],
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets["jwt_secret"],
            "AIRFLOW__API__SECRET_KEY": secrets["api_secret_key"],
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file(cfg)),
            "AIRFLOW__API__HOST": cfg.host,
            "AIRFLOW__API__PORT": str(ports["api"]),
            "AIRFLOW__API__BASE_URL": cfg.api_url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{cfg.api_url}/execution/",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": cfg.host,
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(ports["scheduler_health"]),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(ports["worker_log"]),
            # the worker's and triggerer's log servers bind this host (stack/airflow_main.py), not 0.0.0.0
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_HOST": cfg.host,
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(ports["trigger_log"]),
            **RECOVERY,
            "AIRFLOW__METRICS__STATSD_HOST": cfg.statsd_host,
            "AIRFLOW__METRICS__STATSD_PORT": str(ports["statsd"]),
            # its UDP socket connected to StatsD: no socket of Airflow's left open on 0.0.0.0 (stack/statsd_client.py)
            "AIRFLOW__METRICS__STATSD_CUSTOM_CLIENT_PATH": "helical_airflow.stack.statsd_client.ConnectedStatsClient",
            # the file sensor of the incoming-data DAG looks under this connection's path
            "AIRFLOW_CONN_HELICAL_DATA": json.dumps({"conn_type": "fs", "extra": {"path": str(cfg.data_dir)}}),
            # what the DAG's tasks and the launchers read (settings.py, launchers/)
            "HELICAL_AIRFLOW_DATA_DIR": str(cfg.data_dir),
            "HELICAL_AIRFLOW_OUTPUT_DIR": str(cfg.output_dir),
            "HELICAL_AIRFLOW_RUNNER_PYTHON": cfg.python,
            "HELICAL_AIRFLOW_STATSD_HOST": cfg.statsd_host,
            "HELICAL_AIRFLOW_STATSD_PORT": str(ports["statsd"]),
        }
    )
    if cfg.workers > 1:  # a run's shards are grouped for every worker's slots, not one worker's
        env["HELICAL_AIRFLOW_TASK_SLOTS"] = str(cfg.workers * cfg.worker_concurrency)
    # every worker of the stack leases this machine's GPUs from one folder (gpus.py), whatever its temp folder
    env["HELICAL_AIRFLOW_GPU_LOCK_DIR"] = str(cfg.gpu_lock_dir)
    if cfg.cache_dir:
        env["HELICAL_AIRFLOW_CACHE_DIR"] = str(Path(cfg.cache_dir).resolve())
        # the worker's embed processes read the weights here, also for a plan the second worker made with its own
        env["HELICAL_AIRFLOW_WORKER_CACHE_DIR"] = env["HELICAL_AIRFLOW_CACHE_DIR"]

    if mlflow.enabled(cfg):  # every run the workers finish is tracked in the stack's MLflow server
        env["MLFLOW_TRACKING_URI"] = mlflow.tracking_uri(cfg)
    return env
