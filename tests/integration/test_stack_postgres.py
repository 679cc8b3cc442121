"""The local stack's Postgres for real (initdb, then `postgres -D`; as the `postgres` user when the tests run as
root), started the way `stack up` starts it: it counts as ready only once it takes the stack's login and answers
`SELECT 1`, so the step after it (creating the `airflow` database) runs against a Postgres that accepts logins.
A wrong password or a stopped server is not ready, even while something holds the port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("psycopg")

import psycopg  # noqa: E402
from stack_helpers import free_ports, stack_root  # noqa: E402  (tests/stack_helpers.py)

from helical_airflow.stack import health, manager, process, services, supervisor  # noqa: E402
from helical_airflow.stack.config import StackConfig  # noqa: E402
from helical_airflow.stack.errors import StackError  # noqa: E402
from helical_airflow.stack.process import Service  # noqa: E402
from helical_airflow.stack.secrets import load_or_create  # noqa: E402

Postgres = tuple[StackConfig, dict[str, str], Service]


@pytest.fixture()
def postgres() -> Iterator[Postgres]:
    try:
        services.find_pg_binary("initdb")
        services.find_pg_binary("postgres")
    except StackError:
        pytest.skip("PostgreSQL server binaries are not installed (scripts/install_test_deps.sh)")
    with stack_root("helical-pg-") as root:
        cfg = StackConfig.from_env(state_dir=root / "state", data_dir=root / "data", monitoring=False)
        cfg.ports["postgres"] = free_ports(1)[0]
        secrets, _ = load_or_create(cfg.secrets_file)
        svc = services.postgres(cfg, secrets)
        supervisor.ensure_running(cfg, [svc])  # the stack runs every service under supervisord
        try:
            yield cfg, secrets, svc
        finally:
            supervisor.stop(cfg, "postgres")
            process.stop("postgres", cfg.run_dir)
            process.stop(supervisor.NAME, cfg.run_dir)


def test_postgres_is_ready_once_it_takes_the_stacks_login(postgres: Postgres) -> None:
    cfg, secrets, svc = postgres
    assert svc.health is not None and not svc.health()  # not started: not ready
    lines: list[str] = []
    manager._start_all(cfg, [svc], lines.append, started=[])  # prepare (initdb), start, wait until ready, create DB
    assert lines and "postgres" in lines[0] and "ready" in lines[0]
    assert svc.health()
    # the database the step after readiness created, reached with the stack's own credentials
    conninfo = f"host={cfg.host} port={cfg.ports['postgres']} user=airflow dbname=airflow"
    with psycopg.connect(conninfo, password=secrets["postgres_password"], connect_timeout=5) as conn:
        assert conn.execute("SELECT current_database(), 1").fetchone() == ("airflow", 1)
        # a Postgres that refuses the stack's login is not ready, though its port is open
        conn.execute("ALTER USER airflow PASSWORD 'changed-behind-the-stacks-back'")
        conn.commit()
        assert health.tcp_open(cfg.host, cfg.ports["postgres"]) and not svc.health()
        assert health.postgres_login(cfg.host, cfg.ports["postgres"], "airflow", "changed-behind-the-stacks-back")()
    # stopped: not ready
    assert supervisor.stop(cfg, "postgres")
    assert not svc.health()


def test_postgres_restarts_on_its_data_and_is_ready_again(postgres: Postgres) -> None:
    cfg, _, svc = postgres
    manager._start_all(cfg, [svc], lambda _: None, started=[])
    assert supervisor.stop(cfg, "postgres")
    # the second start skips initdb (PG_VERSION is there) and waits for the login again
    running = supervisor.start(cfg, svc)
    process.wait_ready(svc, running, cfg.ready_timeout_s)
    assert svc.health()
    assert svc.after_start is not None
    svc.after_start()  # the database is already there: nothing to create, no error
