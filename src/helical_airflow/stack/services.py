"""The local stack as a list of service definitions: Postgres, Redis, then the Airflow components.

Monitoring services (Prometheus, the StatsD bridge, ...) are appended by `stack.monitoring`.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from . import errors, health
from .airflow_env import airflow_env, worker_env
from .config import StackConfig
from .mlflow import mlflow_services
from .monitoring import monitoring_services
from .process import Service
from .secrets import write_private

PG_INSTALL = "apt-get install postgresql (Debian/Ubuntu) or brew install postgresql@15 (macOS)"
REDIS_INSTALL = "apt-get install redis-server (Debian/Ubuntu) or brew install redis (macOS)"
AIRFLOW_INSTALL = "pip install -e '.[airflow]' in the project's environment (./setup_helical_env.sh does it)"


def find_pg_binary(name: str) -> str:
    """Postgres server binaries are often off PATH (Debian keeps them in /usr/lib/postgresql/<v>/bin)."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        raise errors.missing_binary(name, PG_INSTALL)
    return found


def _pg_user() -> str | None:
    """Postgres refuses to run as root: when we are root, run it as the `postgres` system user."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise errors.StackError(
            "E505", "running as root and there is no `postgres` user to run the database as", PG_INSTALL
        ) from None
    return "postgres"


def postgres(cfg: StackConfig, secrets: dict[str, str]) -> Service:
    user = _pg_user()
    sock_dir = cfg.pg_data.parent / "run"

    def initdb() -> None:
        if (cfg.pg_data / "PG_VERSION").is_file():
            return
        for folder in (cfg.pg_data, sock_dir):
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o700)
            if user:
                shutil.chown(folder, user, user)
        if user:  # the postgres user must be able to reach its folders
            _allow_traverse(cfg.pg_data.parent, user)
        with tempfile.NamedTemporaryFile("w", dir=sock_dir, delete=False) as pwfile:
            pwfile.write(secrets["postgres_password"] + "\n")
        if user:
            shutil.chown(pwfile.name, user, user)
        try:
            subprocess.run(
                [find_pg_binary("initdb"), "-D", str(cfg.pg_data), "-U", "airflow", f"--pwfile={pwfile.name}",
                 "-A", "scram-sha-256", "-E", "UTF8", "--locale=C", "--no-instructions"],
                check=True, capture_output=True, text=True, user=user,
            )  # fmt: skip
        except subprocess.CalledProcessError as exc:
            raise errors.StackError("E506", f"initdb failed: {exc.stderr.strip()[-800:]}", "see the message") from None
        finally:
            os.unlink(pwfile.name)

    def create_database() -> None:
        import psycopg

        conninfo = f"host={cfg.host} port={cfg.ports['postgres']} user=airflow dbname=postgres"
        with psycopg.connect(conninfo, password=secrets["postgres_password"], autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'airflow'").fetchone():
                conn.execute("CREATE DATABASE airflow")

    options = {
        "listen_addresses": cfg.host,
        "unix_socket_directories": str(sock_dir),
        "synchronous_commit": "off",  # a dev stack: faster commits, still crash-safe
        "max_connections": "200",
    }
    pg_settings = [arg for key, value in options.items() for arg in ("-c", f"{key}={value}")]
    return Service(
        name="postgres",
        argv=[find_pg_binary("postgres"), "-D", str(cfg.pg_data), "-p", str(cfg.ports["postgres"]), *pg_settings],
        log_file=cfg.log_dir / "postgres.log",
        port=cfg.ports["postgres"],
        health=health.postgres_login(cfg.host, cfg.ports["postgres"], "airflow", secrets["postgres_password"]),
        install_hint=PG_INSTALL,
        user=user,
        stop_signal=signal.SIGINT,  # Postgres' "fast" shutdown
        prepare=initdb,
        after_start=create_database,
    )


def _allow_traverse(folder: Path, user: str) -> None:
    """Check every parent of `folder` can be entered by `user` (e.g. a 0700 temp dir cannot)."""
    for parent in [folder, *folder.parents]:
        mode = parent.stat().st_mode
        if not mode & 0o001 and parent.owner() != user:
            raise errors.StackError(
                "E507",
                f"the `{user}` user cannot enter {parent}, so Postgres cannot reach its data folder",
                f"chmod o+x {parent}, or put the state folder elsewhere (HELICAL_STACK_STATE_DIR)",
            )


def redis(cfg: StackConfig, secrets: dict[str, str]) -> Service:
    conf = cfg.redis_dir / "redis.conf"

    def write_conf() -> None:  # a config file keeps the password out of `ps`
        cfg.redis_dir.mkdir(parents=True, exist_ok=True)
        write_private(
            conf,
            f"port {cfg.ports['redis']}\nbind {cfg.host}\nrequirepass {secrets['redis_password']}\n"
            f'dir {cfg.redis_dir}\nsave ""\ndaemonize no\nprotected-mode yes\nlogfile ""\n'
            # AOF: every queued Celery message is on disk within a second, so a restart loses none
            "appendonly yes\nappendfsync everysec\n",
        )

    def ping() -> bool:
        import redis as redis_client

        try:
            client = redis_client.Redis(host=cfg.host, port=cfg.ports["redis"], password=secrets["redis_password"])
            return bool(client.ping())
        except redis_client.RedisError:
            return False

    return Service(
        name="redis",
        argv=[shutil.which("redis-server") or "redis-server", str(conf)],
        log_file=cfg.log_dir / "redis.log",
        port=cfg.ports["redis"],
        health=ping,
        install_hint=REDIS_INSTALL,
        prepare=write_conf,
    )


def airflow_services(cfg: StackConfig, secrets: dict[str, str]) -> list[Service]:
    """api-server, scheduler, dag-processor, triggerer and the Celery workers (queues default and gpu): `worker`,
    and with HELICAL_STACK_WORKERS=2 `worker-2`, which shares only the broker, the database and the outputs."""
    airflow = cfg.bin("airflow") or "airflow"
    env = airflow_env(cfg, secrets)
    ports = cfg.ports

    # the worker and triggerer start a task-log server: through airflow_main it binds cfg.host, not every interface
    log_serving = [cfg.python, "-m", "helical_airflow.stack.airflow_main"]

    def svc(name: str, args: list[str], probe: health.Probe, port: int | None = None,
            own: dict[str, str] | None = None, cwd: Path | None = None) -> Service:  # fmt: skip
        return Service(
            name=name,
            argv=[*(log_serving if name.startswith("worker") or name == "triggerer" else [airflow]), *args],
            env=own or env,
            log_file=cfg.log_dir / f"{name}.log",
            port=port,
            health=probe,
            install_hint=AIRFLOW_INSTALL,
            cwd=cwd or cfg.airflow_home,
            umask=cfg.umask,
        )

    def worker(n: int) -> Service:
        """Celery worker n; the second and further ones with their own folder and cache (airflow_env.worker_env)."""
        own = worker_env(cfg, secrets, n)
        port = int(own["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"])
        name, node = ("worker", cfg.worker_name) if n == 1 else (f"worker-{n}", cfg.worker_name.replace("@", f"-{n}@"))
        folder = None if n == 1 else cfg.worker_dir(n)
        queues, slots = ",".join(cfg.worker_queues), str(cfg.worker_concurrency)
        args = ["celery", "worker", "--queues", queues, "--concurrency", slots, "--celery-hostname", node,
                "--without-gossip", "--without-mingle"]  # fmt: skip
        service = svc(name, args, health.tcp(cfg.host, port), port, own, folder)  # its log server answers once up
        if folder is not None:

            def make_folders(home: Path = folder) -> None:
                for sub in ("tmp", "airflow", "cache"):
                    (home / sub).mkdir(parents=True, exist_ok=True)

            service.prepare = make_folders
        return service

    return [
        svc("api-server", ["api-server"], health.http_ok(f"{cfg.api_url}/api/v2/monitor/health"), ports["api"]),
        svc(
            "scheduler",
            ["scheduler"],
            health.http_ok(f"http://{cfg.host}:{ports['scheduler_health']}/health"),
            ports["scheduler_health"],
        ),
        svc("dag-processor", ["dag-processor"], health.airflow_component(cfg.api_url, "dag_processor")),
        svc("triggerer", ["triggerer"], health.airflow_component(cfg.api_url, "triggerer"), ports["trigger_log"]),
        *(worker(n) for n in range(1, cfg.workers + 1)),
    ]


def core_services(cfg: StackConfig, secrets: dict[str, str]) -> list[Service]:
    return [postgres(cfg, secrets), redis(cfg, secrets), *airflow_services(cfg, secrets)]


def all_services(cfg: StackConfig, secrets: dict[str, str]) -> list[Service]:
    services = core_services(cfg, secrets) + mlflow_services(cfg)
    if cfg.monitoring:
        services += monitoring_services(cfg)
    return services
