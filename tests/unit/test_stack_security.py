"""Security settings of the local stack without starting it: secret lengths, the admin password shown after the
first successful start (and again on demand), log servers on the stack's host, group-readable outputs, Redis AOF
and the recovery settings."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from helical_airflow import store
from helical_airflow.stack import airflow_main, manager, process
from helical_airflow.stack.airflow_env import RECOVERY, airflow_env
from helical_airflow.stack.cli import stack_app
from helical_airflow.stack.config import StackConfig
from helical_airflow.stack.secrets import MIN_BYTES, load_or_create
from helical_airflow.stack.services import airflow_services, redis


@pytest.fixture()
def cfg(tmp_path: Path) -> StackConfig:
    return StackConfig.from_env(state_dir=tmp_path / "state", data_dir=tmp_path / "data", monitoring=False)


def test_jwt_and_api_secrets_are_long_enough_and_short_old_ones_are_replaced(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    made, _ = load_or_create(path)
    assert len(made["jwt_secret"].encode()) >= 64  # HS512 wants a key of at least its 64-byte block
    assert len(made["api_secret_key"].encode()) >= 32
    old = {**made, "jwt_secret": "x" * 43}  # what an earlier version generated
    path.write_text(json.dumps(old))
    upgraded, created = load_or_create(path)
    assert created and len(upgraded["jwt_secret"].encode()) >= MIN_BYTES["jwt_secret"]
    assert upgraded["admin_password"] == made["admin_password"]  # the password a user knows is kept


def test_the_password_is_shown_after_the_first_successful_up_only_and_again_on_demand(cfg: StackConfig) -> None:
    secrets, _ = load_or_create(cfg.secrets_file)  # a first `up` made the secrets, then failed its pre-flight
    assert manager.take_password_to_show(cfg, secrets) == secrets["admin_password"]  # the next successful up
    assert manager.take_password_to_show(cfg, secrets) is None
    result = CliRunner().invoke(stack_app, ["password", "--state-dir", str(cfg.state_dir)])
    assert result.exit_code == 0 and result.output.strip() == secrets["admin_password"]


def test_stack_password_before_any_start_says_how(tmp_path: Path) -> None:
    result = CliRunner().invoke(stack_app, ["password", "--state-dir", str(tmp_path / "never")])
    assert result.exit_code == 2 and "E509" in result.output


def test_worker_and_triggerer_log_servers_bind_the_stack_host(cfg: StackConfig) -> None:
    secrets, _ = load_or_create(cfg.secrets_file)
    env = airflow_env(cfg, secrets)
    assert env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_HOST"] == cfg.host == "127.0.0.1"
    services = {s.name: s for s in airflow_services(cfg, secrets)}
    for name in ("worker", "triggerer"):
        assert services[name].argv[:3] == [cfg.python, "-m", "helical_airflow.stack.airflow_main"]
        assert services[name].umask == 0o027


def test_the_patched_uvicorn_binds_the_host_where_airflow_asks_for_every_interface(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import uvicorn

    calls: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    airflow_main.bind_log_servers("127.0.0.1")
    from airflow.utils.serve_logs import core  # the module that calls uvicorn.run(host="")

    assert core.uvicorn is uvicorn
    uvicorn.run("app", host="", port=1)
    uvicorn.run("app", host="10.1.2.3", port=2)  # an explicit host is left alone
    assert [c["host"] for c in calls] == ["127.0.0.1", "10.1.2.3"]


def test_airflow_main_runs_the_stock_cli() -> None:
    done = subprocess.run([sys.executable, "-m", "helical_airflow.stack.airflow_main", "version"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip().startswith("3."), done.stderr[-2000:]


def test_recovery_settings_are_in_the_airflow_env(cfg: StackConfig) -> None:
    secrets, _ = load_or_create(cfg.secrets_file)
    env = airflow_env(cfg, secrets)
    assert {k: env[k] for k in RECOVERY} == RECOVERY
    assert int(env["AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT"]) <= 60
    assert int(env["AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT"]) <= 120
    assert int(env["AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT"]) > 4 * 3600  # > embed's timeout


def test_redis_persists_its_queue(cfg: StackConfig) -> None:
    secrets, _ = load_or_create(cfg.secrets_file)
    service = redis(cfg, secrets)
    assert service.prepare
    service.prepare()
    conf = (cfg.redis_dir / "redis.conf").read_text().splitlines()
    assert "appendonly yes" in conf and "appendfsync everysec" in conf


def test_outputs_follow_the_umask_and_are_group_readable_under_027(tmp_path: Path) -> None:
    previous = os.umask(0o027)
    try:
        store.save_npy(tmp_path / "a.npy", np.zeros(3))
        store.write_json(tmp_path / "b.json", {"x": 1})
    finally:
        os.umask(previous)
    for name in ("a.npy", "b.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o640


def test_services_start_with_their_umask(cfg: StackConfig) -> None:
    service = process.Service(
        name="umask",
        argv=[sys.executable, "-c", f"open({str(cfg.state_dir / 'made')!r}, 'w').close()"],
        log_file=cfg.log_dir / "umask.log",
        umask=0o027,
    )
    running = process.start(service, cfg.run_dir)
    import psutil

    psutil.Process(running.pid).wait(30)
    assert stat.S_IMODE((cfg.state_dir / "made").stat().st_mode) == 0o640


def test_airflows_statsd_client_sends_from_a_connected_loopback_socket(cfg: StackConfig) -> None:
    import socket

    from helical_airflow.stack.statsd_client import ConnectedStatsClient

    secrets, _ = load_or_create(cfg.secrets_file)
    path = airflow_env(cfg, secrets)["AIRFLOW__METRICS__STATSD_CUSTOM_CLIENT_PATH"]
    assert path == "helical_airflow.stack.statsd_client.ConnectedStatsClient"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(10)
        client = ConnectedStatsClient("127.0.0.1", server.getsockname()[1], prefix="airflow")
        client.incr("scheduler_heartbeat")
        assert server.recv(100) == b"airflow.scheduler_heartbeat:1|c"
        local, remote = client._sock.getsockname(), client._sock.getpeername()
        assert local[0] == "127.0.0.1" and remote == server.getsockname()  # not an open 0.0.0.0 socket


def test_supervisord_config_keeps_secrets_out_and_escapes_percent(cfg: StackConfig) -> None:
    from helical_airflow.stack import supervisor
    from helical_airflow.stack.services import all_services

    secrets, _ = load_or_create(cfg.secrets_file)
    services = all_services(cfg, secrets)
    supervisor.write_conf(cfg, services)
    conf = supervisor.conf_file(cfg).read_text()
    assert stat.S_IMODE(supervisor.conf_file(cfg).stat().st_mode) == 0o600
    assert not any(value in conf for value in secrets.values())  # they live in the 0600 env files
    assert f"file={supervisor.socket_file(cfg)}" in conf and "inet_http_server" not in conf  # no TCP port
    worker = conf.split("[program:worker]")[1].split("[program:")[0]
    assert "helical-stack@%%h" in worker and "autorestart=true" in worker and "killasgroup=true" in worker
    assert "umask=027" in worker
    env = json.loads(supervisor.env_file(cfg, "worker").read_text())
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == secrets["jwt_secret"]
    assert stat.S_IMODE(supervisor.env_file(cfg, "worker").stat().st_mode) == 0o600


def test_runenv_adds_the_env_file_and_execs(tmp_path: Path) -> None:
    env_path = tmp_path / "env.json"
    env_path.write_text(json.dumps({"HELICAL_TEST_VALUE": "a,b=c %s"}))
    done = subprocess.run([sys.executable, "-m", "helical_airflow.stack.runenv", str(env_path), "--", sys.executable,
                           "-c", "import os; print(os.environ['HELICAL_TEST_VALUE'])"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "a,b=c %s", done.stderr
