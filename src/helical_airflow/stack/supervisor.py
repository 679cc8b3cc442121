"""The stack's services run under supervisord (the `supervisor` package), which restarts one that crashes.

`stack up` writes `run/supervisord.conf` (one `[program:NAME]` per service, autostart off, autorestart on,
stop/kill as a process group, the service's umask and log file), starts supervisord itself as a detached
service with a PID file (process.py), then starts each program in order through supervisord's XML-RPC
interface on a unix socket (`run/supervisor.sock`, mode 0700: no TCP port). A service's environment (it holds
the stack's secrets) is not in the config file: it is written 0600 to `run/<name>.env.json` and loaded by
`python -m helical_airflow.stack.runenv` right before exec.

supervisord restarts a program that exits; the `healthwatch` program (stack/healthwatch.py) restarts one whose
health probe keeps failing while it runs (e.g. a scheduler that is alive but no longer scheduling), and one that
supervisord gave up on (FATAL after too many quick exits, e.g. while Postgres was down). Each program's PID file
is rewritten after every (re)start, so `stack status`, `down` and the tests see the current process.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import shlex
import signal
import socket
import time
import xmlrpc.client
from pathlib import Path
from typing import Any

import psutil

from . import errors, process
from .config import StackConfig
from .process import Running, Service
from .secrets import write_private

NAME = "supervisord"
#: supervisord's process states (supervisor.states.ProcessStates)
RUNNING_STATES = {"STARTING", "RUNNING", "BACKOFF"}
START_RETRIES = 10  # quick exits in a row before supervisord marks a program FATAL (healthwatch retries later)


def socket_file(cfg: StackConfig) -> Path:
    return cfg.run_dir / "supervisor.sock"


def conf_file(cfg: StackConfig) -> Path:
    return cfg.run_dir / "supervisord.conf"


def env_file(cfg: StackConfig, name: str) -> Path:
    return cfg.run_dir / f"{name}.env.json"


def _escape(text: str) -> str:
    return text.replace("%", "%%")  # supervisord expands %(name)s in its config


def program_command(cfg: StackConfig, service: Service) -> list[str]:
    if not service.env:
        return list(service.argv)
    return [cfg.python, "-m", "helical_airflow.stack.runenv", str(env_file(cfg, service.name)), "--",
            *service.argv]  # fmt: skip


def write_conf(cfg: StackConfig, services: list[Service]) -> None:
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    cfg.log_dir.mkdir(parents=True, exist_ok=True)
    sections = [
        f"[unix_http_server]\nfile={socket_file(cfg)}\nchmod=0700\n",
        f"[supervisord]\nnodaemon=true\nlogfile={cfg.log_dir / 'supervisord.log'}\nlogfile_maxbytes=10MB\n"
        f"pidfile={cfg.run_dir / 'supervisord.own-pidfile'}\nchildlogdir={cfg.log_dir}\n",
        "[rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n",
        f"[supervisorctl]\nserverurl=unix://{socket_file(cfg)}\n",
    ]
    for service in services:
        if service.env:
            write_private(env_file(cfg, service.name), json.dumps(service.env))
        lines = [
            f"[program:{service.name}]",
            f"command={_escape(shlex.join(program_command(cfg, service)))}",
            "autostart=false",
            "autorestart=true",
            "startsecs=2",
            f"startretries={START_RETRIES}",
            f"stopsignal={_signal_name(service.stop_signal)}",
            "stopwaitsecs=20",
            "stopasgroup=true",
            "killasgroup=true",
            "redirect_stderr=true",
            f"stdout_logfile={_escape(str(service.log_file))}",
            "stdout_logfile_maxbytes=50MB",
            "stdout_logfile_backups=2",
        ]
        if service.cwd:
            lines.append(f"directory={_escape(str(service.cwd))}")
        if service.user:
            lines.append(f"user={service.user}")
        if service.umask is not None:
            lines.append(f"umask={service.umask:03o}")
        sections.append("\n".join(lines) + "\n")
    write_private(conf_file(cfg), "\n".join(sections))


def _signal_name(sig: int) -> str:
    return signal.Signals(sig).name.removeprefix("SIG")


def service(cfg: StackConfig) -> Service:
    """supervisord itself, as a detached service of process.py (PID file `run/supervisord.pid`)."""
    return Service(
        name=NAME,
        argv=[cfg.bin("supervisord") or "supervisord", "-c", str(conf_file(cfg))],
        log_file=cfg.log_dir / "supervisord.out.log",
        health=lambda: ping(cfg),
        install_hint="pip install supervisor (the project's `airflow` extra has it)",
    )


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__()
        self._path = path
        self._timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        return _UnixHTTPConnection(self._path, self._timeout)


def rpc(cfg: StackConfig, timeout: float = 30.0) -> Any:
    """supervisord's XML-RPC interface (`supervisor.*` methods) over its unix socket."""
    return xmlrpc.client.ServerProxy("http://localhost", transport=_UnixTransport(str(socket_file(cfg)), timeout))


def ping(cfg: StackConfig) -> bool:
    try:
        return rpc(cfg, timeout=2).supervisor.getState()["statename"] == "RUNNING"
    except (OSError, xmlrpc.client.Error):
        return False


def running(cfg: StackConfig) -> bool:
    return process.read_pid(cfg.run_dir, NAME) is not None and ping(cfg)


def ensure_running(cfg: StackConfig, services: list[Service]) -> None:
    """Write the config and start supervisord, or make a running one read the new config (new programs only)."""
    write_conf(cfg, services)
    if running(cfg):
        server = rpc(cfg)
        added, changed, removed = server.supervisor.reloadConfig()[0]
        for name in added:
            server.supervisor.addProcessGroup(name)
        for name in changed:  # only programs that are not running are refreshed: a running one is left alone
            info = server.supervisor.getProcessInfo(name)
            if info["statename"] not in RUNNING_STATES:
                server.supervisor.removeProcessGroup(name)
                server.supervisor.addProcessGroup(name)
        return
    sup = service(cfg)
    process.check_binary(sup)
    started = process.start(sup, cfg.run_dir)
    process.wait_ready(sup, started, 30)


def start(cfg: StackConfig, service: Service) -> Running:
    """Start the program (without waiting for it: the caller checks its health) and record its PID."""
    server = rpc(cfg)
    try:
        server.supervisor.startProcess(service.name, False)
    except xmlrpc.client.Fault as fault:
        if "ALREADY_STARTED" not in fault.faultString:
            hint = f"read {service.log_file} and {cfg.log_dir / 'supervisord.log'}"
            raise errors.StackError("E515", f"supervisord could not start {service.name}: {fault.faultString}",
                                    hint) from None  # fmt: skip
    deadline = time.monotonic() + 10
    while True:
        pid = int(server.supervisor.getProcessInfo(service.name)["pid"])
        if pid or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if not pid:
        raise errors.died(service.name, None, str(service.log_file), process.log_tail(service.log_file))
    return record_pid(cfg, service.name, pid, service.stop_signal)


def record_pid(cfg: StackConfig, name: str, pid: int, stop_signal: int) -> Running:
    proc = psutil.Process(pid)
    started = Running(pid, proc.create_time(), stop_signal)
    process.pid_file(cfg.run_dir, name).write_text(
        json.dumps({"pid": pid, "started": started.started, "stop_signal": int(stop_signal), "supervised": True})
    )
    return started


def refresh_pid_files(cfg: StackConfig) -> None:
    """After supervisord restarted programs, point their PID files at the new processes."""
    if not running(cfg):
        return
    with contextlib.suppress(OSError, xmlrpc.client.Error):
        for info in rpc(cfg).supervisor.getAllProcessInfo():
            if info["statename"] == "RUNNING" and info["pid"]:
                current = process.read_pid(cfg.run_dir, info["name"])
                if current is None or current.pid != info["pid"]:
                    with contextlib.suppress(psutil.Error):
                        previous = _stop_signal(cfg, info["name"])
                        record_pid(cfg, info["name"], int(info["pid"]), previous)


def _stop_signal(cfg: StackConfig, name: str) -> int:
    try:
        return int(json.loads(process.pid_file(cfg.run_dir, name).read_text()).get("stop_signal", signal.SIGTERM))
    except (OSError, ValueError):
        return int(signal.SIGTERM)


def stop(cfg: StackConfig, name: str) -> bool:
    """Stop a program through supervisord (so it is not restarted); False when supervisord does not run it."""
    if not running(cfg):
        return False
    try:
        rpc(cfg, timeout=60).supervisor.stopProcess(name, True)
    except xmlrpc.client.Fault as fault:
        return "NOT_RUNNING" in fault.faultString
    except OSError:
        return False
    return True


def restart(cfg: StackConfig, service: Service) -> Running:
    stop(cfg, service.name)
    return start(cfg, service)
