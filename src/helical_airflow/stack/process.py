"""Start, watch and stop one service as a detached process group with a PID file.

Each service runs in its own session (so its process group id is its PID): `stop` signals the whole
group plus any descendant that left it, waits, then escalates to SIGKILL. The PID file records the
process start time too, so a recycled PID is never mistaken for the service.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from . import errors

#: without a health probe, a service is ready once it has stayed up this long
ALIVE_GRACE_S = 2.0


@dataclass
class Service:
    """One long-running process of the stack (monitoring.py builds more of these)."""

    name: str
    argv: list[str]
    log_file: Path
    env: dict[str, str] = field(default_factory=dict)  # added on top of the caller's environment
    port: int | None = None  # TCP port it listens on: must be free before it starts
    udp_port: int | None = None  # UDP port it listens on (StatsD bridge)
    health: Callable[[], bool] | None = None  # True once ready; None: being alive is enough
    install_hint: str = ""  # how to get argv[0] when it is missing
    user: str | None = None  # run as this user (Postgres refuses to run as root)
    cwd: Path | None = None
    stop_signal: int = signal.SIGTERM
    umask: int | None = None  # file mode mask of what it writes (Airflow: outputs readable by the group)
    prepare: Callable[[], None] | None = None  # one-time set-up before starting (e.g. initdb)
    after_start: Callable[[], None] | None = None  # once healthy (e.g. create the database)


@dataclass
class Running:
    pid: int
    started: float  # process create time, to detect a recycled PID
    stop_signal: int = signal.SIGTERM


def pid_file(run_dir: Path, name: str) -> Path:
    return run_dir / f"{name}.pid"


def read_pid(run_dir: Path, name: str) -> Running | None:
    """The service's process if its PID file names a live process that is still the one we started."""
    path = pid_file(run_dir, name)
    try:
        data = json.loads(path.read_text())
        proc = psutil.Process(data["pid"])
        if abs(proc.create_time() - data["started"]) > 1.0 or proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return Running(data["pid"], data["started"], data.get("stop_signal", signal.SIGTERM))
    except (OSError, ValueError, KeyError, TypeError, psutil.Error):
        return None


def check_binary(service: Service) -> None:
    exe = service.argv[0]
    if not (os.path.isabs(exe) and os.access(exe, os.X_OK)) and shutil.which(exe) is None:
        raise errors.missing_binary(exe, service.install_hint or f"install {exe}")


def start(service: Service, run_dir: Path) -> Running:
    """Launch the service detached (new session); stdout and stderr go to its log file."""
    service.log_file.parent.mkdir(parents=True, exist_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(service.log_file, "ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {service.name}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            service.argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **service.env},
            cwd=service.cwd,
            user=service.user,
            umask=-1 if service.umask is None else service.umask,
            start_new_session=True,
        )
    running = Running(proc.pid, psutil.Process(proc.pid).create_time(), service.stop_signal)
    path = pid_file(run_dir, service.name)
    record = {"pid": running.pid, "started": running.started, "stop_signal": int(service.stop_signal)}
    path.write_text(json.dumps({**record, "argv": service.argv[:2]}))
    return running


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_ready(service: Service, running: Running, timeout_s: float) -> None:
    """Poll the health probe until it passes; fail early, with the log tail, if the process dies."""
    start = time.monotonic()
    deadline = start + timeout_s
    while True:
        try:
            proc = psutil.Process(running.pid)
            alive = proc.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            alive = False
        if not alive:
            code = _reap(running.pid)
            raise errors.died(service.name, code, str(service.log_file), log_tail(service.log_file))
        if service.health() if service.health else time.monotonic() - start > ALIVE_GRACE_S:
            return
        if time.monotonic() > deadline:
            raise errors.unhealthy(service.name, timeout_s, str(service.log_file), log_tail(service.log_file))
        time.sleep(0.5)


def _reap(pid: int) -> int | None:
    """Collect our own child's exit status (no-op for processes started by another `stack up`)."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
        return os.waitstatus_to_exitcode(status) if done else None
    except ChildProcessError:
        return None


def stop(name: str, run_dir: Path, timeout_s: float = 20.0) -> bool:
    """Ask the service to shut down (its stop signal to its main process), then SIGKILL what is left of its tree.

    True if something was running.
    """
    running = read_pid(run_dir, name)
    pid_file(run_dir, name).unlink(missing_ok=True)
    if running is None:
        return False
    try:
        main = psutil.Process(running.pid)
        tree = [main, *main.children(recursive=True)]
    except psutil.NoSuchProcess:
        return False
    _signal(main, running.stop_signal)
    alive = _wait_gone(tree, timeout_s)
    if alive:  # descendants that outlived the main process, or a main process that would not stop
        _signal_group(running.pid, signal.SIGKILL)
        for proc in alive:
            _signal(proc, signal.SIGKILL)
        _wait_gone(alive, 5)
    _reap(running.pid)
    return True


def _wait_gone(procs: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Wait until none is running; a zombie counts as gone (its parent may be slow to reap it)."""
    deadline = time.monotonic() + timeout_s
    while True:
        _reap_all(procs)
        alive = [p for p in procs if _alive(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _reap_all(procs: list[psutil.Process]) -> None:
    for proc in procs:
        _reap(proc.pid)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _signal(proc: psutil.Process, sig: int) -> None:
    with contextlib.suppress(psutil.Error):
        proc.send_signal(sig)
