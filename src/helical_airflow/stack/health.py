"""Readiness probes for the stack's services: plain TCP, HTTP, a Postgres login, and Airflow's own health endpoint."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Callable

Probe = Callable[[], bool]


def tcp_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_free(host: str, port: int, udp: bool = False) -> bool:
    """True when nothing else is bound to host:port (what a service needs before it starts)."""
    kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as sock:
        if not udp:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def http_json(url: str, timeout: float = 2.0) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (local URL built by us)
            return json.loads(resp.read() or b"{}") if resp.status == 200 else None
    except (urllib.error.URLError, OSError, ValueError):
        return None


def http_ok(url: str) -> Probe:
    return lambda: http_json(url) is not None


def airflow_component(api_url: str, component: str) -> Probe:
    """`/api/v2/monitor/health` reports each component's last heartbeat (no login needed)."""

    def probe() -> bool:
        body = http_json(f"{api_url}/api/v2/monitor/health") or {}
        return (body.get(component) or {}).get("status") == "healthy"

    return probe


def tcp(host: str, port: int) -> Probe:
    return lambda: tcp_open(host, port)


def postgres_login(host: str, port: int, user: str, password: str, dbname: str = "postgres") -> Probe:
    """Postgres is ready once it takes a login and answers `SELECT 1`.

    An open port is not enough: while it starts up (or recovers) Postgres listens but refuses logins with
    "the database system is starting up", and the next step (creating the database) would fail.
    """

    def probe() -> bool:
        import psycopg

        try:
            # connect_timeout: libpq's whole seconds (2 is its minimum); a peer that never answers fails the probe
            with psycopg.connect(host=host, port=port, user=user, password=password, dbname=dbname,
                                 connect_timeout=2, autocommit=True) as conn:  # fmt: skip
                return conn.execute("SELECT 1").fetchone() == (1,)
        except (psycopg.Error, OSError):
            return False

    return probe
