"""The local stack's parts without starting Airflow: secrets, the process supervisor, pre-flight errors,
the Airflow environment and the configuration."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

import psutil
import pytest

from helical_airflow.stack import health, manager, process
from helical_airflow.stack.airflow_env import airflow_env, read_env_file
from helical_airflow.stack.config import StackConfig
from helical_airflow.stack.errors import StackError
from helical_airflow.stack.process import Service
from helical_airflow.stack.secrets import load_or_create


@pytest.fixture()
def cfg(tmp_path: Path) -> StackConfig:
    return StackConfig.from_env(state_dir=tmp_path / "state", data_dir=tmp_path / "data", monitoring=False)


def test_secrets_are_generated_once_and_private(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    first, created = load_or_create(path)
    assert created and path.stat().st_mode & 0o777 == 0o600
    assert len(set(first.values())) == len(first)  # all different
    assert all(len(v) >= 16 and v != "admin" for v in first.values())
    again, created_again = load_or_create(path)
    assert again == first and not created_again
    # a secret added by a newer version is generated without touching the others
    data = json.loads(path.read_text())
    del data["jwt_secret"]
    path.write_text(json.dumps(data))
    upgraded, created = load_or_create(path)
    assert created and upgraded["jwt_secret"] and upgraded["admin_password"] == first["admin_password"]


def _service(cfg: StackConfig, name: str, script: str, **kw: object) -> Service:
    return Service(name=name, argv=[sys.executable, "-c", script], log_file=cfg.log_dir / f"{name}.log", **kw)


def _descendants(pid: int) -> list[int]:
    return [p.pid for p in psutil.Process(pid).children(recursive=True)]


def test_stop_kills_the_whole_tree_even_children_in_their_own_session(cfg: StackConfig) -> None:
    # a parent that ignores SIGTERM, with a child in its own session (as task subprocesses are)
    script = (
        "import signal, subprocess, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "subprocess.Popen(['sleep', '300'], start_new_session=True)\n"
        "subprocess.Popen(['sleep', '301'])\n"
        "print('ready', flush=True)\n"
        "time.sleep(300)\n"
    )
    svc = _service(cfg, "tree", script)
    running = process.start(svc, cfg.run_dir)
    deadline = time.monotonic() + 20
    while len(_descendants(running.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    tree = [running.pid, *_descendants(running.pid)]
    assert len(tree) == 3
    assert process.read_pid(cfg.run_dir, "tree") is not None
    t0 = time.monotonic()
    assert process.stop("tree", cfg.run_dir, timeout_s=2)
    assert time.monotonic() - t0 < 15
    alive = [pid for pid in tree if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert alive == []
    assert not process.pid_file(cfg.run_dir, "tree").exists()
    assert "ready" in (cfg.log_dir / "tree.log").read_text()


def test_a_recycled_pid_is_never_taken_for_the_service(cfg: StackConfig) -> None:
    cfg.run_dir.mkdir(parents=True)
    me = psutil.Process(os.getpid())
    process.pid_file(cfg.run_dir, "ghost").write_text(json.dumps({"pid": me.pid, "started": me.create_time() - 100}))
    assert process.read_pid(cfg.run_dir, "ghost") is None
    assert process.stop("ghost", cfg.run_dir) is False  # and we are still alive to assert it
    assert manager.down(cfg, echo=lambda _: None) == []


def test_a_service_that_dies_while_starting_reports_its_log(cfg: StackConfig) -> None:
    svc = _service(cfg, "crash", "import sys; print('bad config line 3'); sys.exit(7)")
    running = process.start(svc, cfg.run_dir)
    with pytest.raises(StackError) as err:
        process.wait_ready(svc, running, timeout_s=20)
    assert err.value.code == "E504" and "bad config line 3" in err.value.message
    assert "stack logs crash" in err.value.hint


def test_an_unhealthy_service_times_out_with_its_log(cfg: StackConfig) -> None:
    svc = _service(cfg, "slow", "import time; print('still loading'); time.sleep(60)", health=lambda: False)
    running = process.start(svc, cfg.run_dir)
    try:
        with pytest.raises(StackError) as err:
            process.wait_ready(svc, running, timeout_s=1.5)
        assert err.value.code == "E503" and "still loading" in err.value.message
    finally:
        process.stop("slow", cfg.run_dir)


def test_a_taken_port_is_reported_before_anything_starts(cfg: StackConfig) -> None:
    with socket.socket() as busy:
        busy.bind((cfg.host, 0))
        busy.listen()
        port = busy.getsockname()[1]
        svc = _service(cfg, "api-server", "pass", port=port)
        with pytest.raises(StackError) as err:
            manager._preflight(cfg, [svc])
    assert err.value.code == "E501" and str(port) in err.value.message
    assert "HELICAL_STACK_API_PORT" in err.value.hint


def test_a_missing_binary_names_the_install_command(cfg: StackConfig) -> None:
    svc = Service(name="redis", argv=["redis-server-not-installed-here"], log_file=cfg.log_dir / "r.log",
                  install_hint="apt-get install redis-server")  # fmt: skip
    with pytest.raises(StackError) as err:
        manager._preflight(cfg, [svc])
    assert err.value.code == "E502" and "apt-get install redis-server" in err.value.hint


def test_ports_and_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HELICAL_STACK_API_PORT", "18081")
    monkeypatch.setenv("HELICAL_STACK_STATE_DIR", str(tmp_path / "s"))
    monkeypatch.setenv("HELICAL_STACK_PROMETHEUS_PORT", "19090")
    cfg = StackConfig.from_env()
    assert cfg.ports["api"] == 18081 and cfg.api_url.endswith(":18081")
    assert cfg.state_dir == (tmp_path / "s").resolve()
    assert cfg.port("prometheus", 29090) == 19090  # other modules' services get ports the same way
    monkeypatch.delenv("HELICAL_STACK_PROMETHEUS_PORT")
    assert cfg.port("prometheus", 29090) == 29090


def test_airflow_env_wires_celery_postgres_statsd_and_generated_secrets(cfg: StackConfig, tmp_path: Path) -> None:
    secrets, _ = load_or_create(tmp_path / "s.json")
    env = airflow_env(cfg, secrets)
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__METRICS__STATSD_ON"] == "True"
    assert env["AIRFLOW__METRICS__STATSD_PORT"] == str(cfg.ports["statsd"])
    assert env["AIRFLOW__METRICS__STATSD_PREFIX"] == "airflow"
    assert secrets["postgres_password"] in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert f":{cfg.ports['postgres']}/" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert f":{cfg.ports['redis']}/" in env["AIRFLOW__CELERY__BROKER_URL"]
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == secrets["jwt_secret"]
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == f"{cfg.api_url}/execution/"
    assert env["HELICAL_AIRFLOW_DATA_DIR"] == str(cfg.data_dir)
    assert json.loads(env["AIRFLOW_CONN_HELICAL_DATA"])["extra"]["path"] == str(cfg.data_dir)
    # the shared settings file holds no secret
    shared = read_env_file(Path(__file__).resolve().parents[2] / "airflow" / "config" / "airflow.env")
    assert not any(key.endswith(("PASSWORD", "SECRET", "SECRET_KEY", "FERNET_KEY")) for key in shared)


def test_airflow_password_file_is_ours_and_private(cfg: StackConfig, tmp_path: Path) -> None:
    secrets, _ = load_or_create(tmp_path / "s.json")
    manager._write_airflow_passwords(cfg, secrets)
    path = cfg.airflow_home / "passwords.json"
    assert json.loads(path.read_text()) == {"admin": secrets["admin_password"]}
    assert path.stat().st_mode & 0o777 == 0o600


def test_status_of_a_stack_never_started(cfg: StackConfig) -> None:
    assert manager.status(cfg) == []
    with pytest.raises(StackError) as err:
        list(manager.log_lines(cfg, "scheduler"))
    assert err.value.code == "E514"


#: Speaks just enough of the Postgres protocol to refuse every login the way a Postgres that is still
#: starting up (or recovering) does: SQLSTATE 57P03 "the database system is starting up". Its port is open.
_STARTING_POSTGRES = r"""
import socket, struct, sys
server = socket.create_server(("127.0.0.1", int(sys.argv[1])))
print("listening", flush=True)
while True:
    conn, _ = server.accept()
    with conn:
        while len(head := conn.recv(8, socket.MSG_WAITALL)) == 8:
            length, code = struct.unpack("!ii", head)
            if code in (80877103, 80877104):  # SSLRequest, GSSENCRequest: "N", not here
                conn.sendall(b"N")
                continue
            conn.recv(length - 8, socket.MSG_WAITALL)  # the StartupMessage (user, database)
            fields = b"SFATAL\0VFATAL\0C57P03\0Mthe database system is starting up\0\0"
            conn.sendall(b"E" + struct.pack("!i", len(fields) + 4) + fields)
            break
"""


def test_postgres_is_not_ready_while_its_port_is_open_but_logins_are_refused(cfg: StackConfig) -> None:
    pytest.importorskip("psycopg")
    port = cfg.ports["postgres"] = _free_port()
    svc = Service(name="postgres", argv=[sys.executable, "-c", _STARTING_POSTGRES, str(port)],
                  log_file=cfg.log_dir / "postgres.log", port=port,
                  health=health.postgres_login(cfg.host, port, "airflow", "secret"))  # fmt: skip
    assert svc.health is not None and not svc.health()  # nothing listens yet
    running = process.start(svc, cfg.run_dir)
    try:
        deadline = time.monotonic() + 20
        while not health.tcp_open(cfg.host, port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert health.tcp_open(cfg.host, port)  # what readiness used to be
        assert not svc.health()
        with pytest.raises(StackError) as err:  # the usual timeout, code and log tail
            process.wait_ready(svc, running, timeout_s=3)
        assert err.value.code == "E503" and "listening" in err.value.message
    finally:
        process.stop("postgres", cfg.run_dir)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
