"""`stack up / down / status / logs`: bring the services up in order, check health, stop them reliably."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from . import errors, health, process, supervisor
from .airflow_env import airflow_env, passwords_file
from .config import StackConfig
from .process import Service
from .secrets import load_or_create, write_private
from .services import airflow_services, all_services

#: stopped last, in this order, once everything that uses them is gone (supervisord: once it supervises nothing)
_STOP_LAST = ["redis", "postgres", supervisor.NAME]
#: stopped first, so that it restarts nothing while the rest goes down
_STOP_FIRST = ["healthwatch"]


@dataclass
class ServiceStatus:
    name: str
    pid: int | None
    healthy: bool | None  # None: not running
    port: int | None
    log_file: Path


Echo = Callable[[str], None]


def up(cfg: StackConfig, echo: Echo = print) -> tuple[dict[str, str], bool]:
    """Start whatever is not running yet; returns (secrets, whether they were just generated)."""
    t0 = time.monotonic()
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    secrets, created = load_or_create(cfg.secrets_file)
    if any(process.read_pid(cfg.run_dir, name) for name in _known_names(cfg)):
        cfg = saved_config(cfg)  # part of the stack runs: keep the ports and folders it was started with
        supervisor.refresh_pid_files(cfg)
    services = all_services(cfg, secrets)
    watch = healthwatch_service(cfg)
    airflow_names = {s.name for s in airflow_services(cfg, secrets)}
    todo = [s for s in services if process.read_pid(cfg.run_dir, s.name) is None]
    _preflight(cfg, todo)
    _write_airflow_passwords(cfg, secrets)
    _save_config(cfg)
    started: list[str] = []
    had_supervisor = supervisor.running(cfg)
    try:
        supervisor.ensure_running(cfg, [*services, watch])
        _restart_if_not_scheduling(cfg, [s for s in services if s not in todo], echo)
        _start_all(cfg, [s for s in todo if s.name not in airflow_names], echo, started)
        _bootstrap_airflow(cfg, secrets, echo)
        _start_all(cfg, [s for s in todo if s.name in airflow_names], echo, started)
        if process.read_pid(cfg.run_dir, watch.name) is None:
            _start_all(cfg, [watch], echo, started)
    except BaseException:
        for name in reversed(started):  # leave nothing half-started behind; the logs stay
            supervisor.stop(cfg, name)
            process.stop(name, cfg.run_dir)
        if not had_supervisor:
            process.stop(supervisor.NAME, cfg.run_dir)
        raise
    echo(f"stack up in {time.monotonic() - t0:.0f}s: Airflow at {cfg.api_url} (user admin)")
    return secrets, created


#: StackConfig fields `up` records, so status/env/logs later see the ports and folders it used
_SAVED = ("host", "ports", "data_dir", "output_dir", "cache_dir", "dags_folder", "python", "worker_concurrency",
          "worker_name", "gpu_pool_slots", "statsd_host", "monitoring", "workers", "worker_cache_dirs")  # fmt: skip


def password_shown_marker(cfg: StackConfig) -> Path:
    """Exists once a successful `stack up` has shown the admin password (a failed first `up` shows nothing)."""
    return cfg.state_dir / ".admin_password_shown"


def take_password_to_show(cfg: StackConfig, secrets: dict[str, str]) -> str | None:
    """The admin password if no successful `stack up` has shown it yet (marks it shown); else None."""
    marker = password_shown_marker(cfg)
    if marker.is_file():
        return None
    marker.touch()
    return secrets["admin_password"]


def _save_config(cfg: StackConfig) -> None:
    saved = {name: getattr(cfg, name) for name in _SAVED}
    (cfg.state_dir / "stack.json").write_text(json.dumps(saved, default=str, indent=1) + "\n")


def saved_config(cfg: StackConfig) -> StackConfig:
    """`cfg` with the settings the last `stack up` in this state dir used (ports, folders, ...)."""
    path = cfg.state_dir / "stack.json"
    if not path.is_file():
        return cfg
    saved = json.loads(path.read_text())
    for name in _SAVED:
        if name in saved:
            value = saved[name]
            setattr(cfg, name, Path(value) if name in ("data_dir", "output_dir", "dags_folder") else value)
    return cfg


def _preflight(cfg: StackConfig, services: list[Service]) -> None:
    """Missing binaries and taken ports, before anything starts."""
    for service in services:
        process.check_binary(service)
        if service.port and not health.port_free(cfg.host, service.port):
            raise errors.port_taken(service.name, cfg.host, service.port)
        if service.udp_port and not health.port_free(cfg.host, service.udp_port, udp=True):
            raise errors.port_taken(service.name, cfg.host, service.udp_port)


def _write_airflow_passwords(cfg: StackConfig, secrets: dict[str, str]) -> None:
    """Airflow's simple auth manager keeps passwords in this file; writing it first makes the password ours."""
    path = passwords_file(cfg)
    wanted = {"admin": secrets["admin_password"]}
    if not path.is_file() or json.loads(path.read_text() or "{}") != wanted:
        write_private(path, json.dumps(wanted) + "\n")


def healthwatch_service(cfg: StackConfig) -> Service:
    """The supervisord program that restarts services whose health check keeps failing (stack/healthwatch.py)."""
    return Service(
        name="healthwatch",
        argv=[cfg.python, "-m", "helical_airflow.stack.healthwatch", str(cfg.state_dir)],
        log_file=cfg.log_dir / "healthwatch.log",
    )


def _restart_if_not_scheduling(cfg: StackConfig, running: list[Service], echo: Echo) -> None:
    """A scheduler whose process lives but whose /health fails (e.g. it left its loop when Postgres went away)."""
    for service in running:
        if service.name == "scheduler" and service.health and not _healthy_within(service.health, 15):
            echo("  scheduler      alive but not scheduling (its /health fails): restarting it")
            proc = supervisor.restart(cfg, service)
            process.wait_ready(service, proc, cfg.ready_timeout_s)


def _healthy_within(probe: health.Probe, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not probe():
        if time.monotonic() > deadline:
            return False
        time.sleep(1)
    return True


def _start_all(cfg: StackConfig, services: list[Service], echo: Echo, started: list[str]) -> None:
    """Start a group in parallel under supervisord, then wait for each to be healthy."""
    running = []
    for service in services:
        if service.prepare:
            service.prepare()
        running.append((service, supervisor.start(cfg, service)))
        started.append(service.name)
    for service, proc in running:
        t0 = time.monotonic()
        process.wait_ready(service, proc, cfg.ready_timeout_s)
        if service.after_start:
            service.after_start()
        echo(f"  {service.name:<14} ready (pid {proc.pid}, {time.monotonic() - t0:.1f}s)")


def _bootstrap_airflow(cfg: StackConfig, secrets: dict[str, str], echo: Echo) -> None:
    """Migrate the metadata DB and create pools, once per state dir (a marker records it)."""
    marker = cfg.airflow_home / ".bootstrapped"
    stamp = f"{_airflow_version(cfg)} gpu_pool_slots={cfg.gpu_pool_slots}"
    if marker.is_file() and marker.read_text() == stamp:
        return
    cfg.airflow_home.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    log = cfg.log_dir / "bootstrap.log"
    with open(log, "ab") as out:
        result = subprocess.run(
            [cfg.python, "-m", "helical_airflow.stack.bootstrap", str(cfg.gpu_pool_slots)],
            env={**os.environ, **airflow_env(cfg, secrets)},
            stdout=out, stderr=subprocess.STDOUT, cwd=cfg.airflow_home,
        )  # fmt: skip
    if result.returncode != 0:
        raise errors.StackError(
            "E508",
            f"Airflow database migration failed:\n{process.log_tail(log)}",
            f"read {log}; `helical-airflow stack down --purge` starts from a clean state",
        )
    marker.write_text(stamp)
    echo(f"  {'airflow db':<14} migrated ({time.monotonic() - t0:.1f}s)")


def _airflow_version(cfg: StackConfig) -> str:
    try:
        return version("apache-airflow-core")
    except PackageNotFoundError:
        return "unknown"


def _known_names(cfg: StackConfig) -> list[str]:
    """Services with a PID file, in shutdown order."""
    names = sorted(p.stem for p in cfg.run_dir.glob("*.pid")) if cfg.run_dir.is_dir() else []
    ends = _STOP_FIRST + _STOP_LAST
    return ([n for n in _STOP_FIRST if n in names] + [n for n in names if n not in ends]
            + [n for n in _STOP_LAST if n in names])  # fmt: skip


def down(cfg: StackConfig, echo: Echo = print, purge: bool = False) -> list[str]:
    """Stop every service that has a PID file; `purge` also deletes the state dir (database, secrets).

    Everything but the databases stops in parallel; Redis and Postgres stop last.
    """
    supervisor.refresh_pid_files(cfg)
    names = _known_names(cfg)
    first = [n for n in names if n not in _STOP_LAST + _STOP_FIRST]

    def stop(name: str) -> str | None:
        t0 = time.monotonic()
        # through supervisord first (else it would restart the service), then whatever is left of its tree
        by_supervisor = name != supervisor.NAME and supervisor.stop(cfg, name)
        if not process.stop(name, cfg.run_dir) and not by_supervisor:
            return None
        echo(f"  {name:<14} stopped ({time.monotonic() - t0:.1f}s)")
        return name

    stopped = [n for n in map(stop, [n for n in names if n in _STOP_FIRST]) if n]
    with ThreadPoolExecutor(max_workers=max(len(first), 1)) as pool:
        stopped += [n for n in pool.map(stop, first) if n]
    stopped += [n for n in map(stop, [n for n in names if n in _STOP_LAST]) if n]
    if purge and cfg.state_dir.is_dir():
        shutil.rmtree(cfg.state_dir)
        echo(f"  removed {cfg.state_dir}")
    return stopped


def status(cfg: StackConfig) -> list[ServiceStatus]:
    cfg = saved_config(cfg)
    supervisor.refresh_pid_files(cfg)
    secrets = json.loads(cfg.secrets_file.read_text()) if cfg.secrets_file.is_file() else None
    if secrets is None:
        return []
    rows = []
    for service in all_services(cfg, secrets):
        running = process.read_pid(cfg.run_dir, service.name)
        healthy = None if running is None else (service.health() if service.health else True)
        rows.append(ServiceStatus(service.name, running.pid if running else None, healthy, service.port,
                                  service.log_file))  # fmt: skip
    return rows


def log_lines(cfg: StackConfig, name: str, lines: int = 50, follow: bool = False) -> Iterator[str]:
    path = cfg.log_dir / f"{name}.log"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in cfg.log_dir.glob("*.log"))) or "none yet"
        raise errors.StackError("E514", f"no log for service {name!r}", f"pick one of: {known}")
    with open(path, errors="replace") as fh:
        yield from fh.read().splitlines()[-lines:]
        while follow:
            line = fh.readline()
            if line:
                yield line.rstrip("\n")
            else:
                time.sleep(0.5)
