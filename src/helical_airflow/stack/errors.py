"""Errors of the local stack (codes E50x): what is wrong and the command that fixes it."""

from __future__ import annotations

from ..errors import HelicalAirflowError


class StackError(HelicalAirflowError):
    """The local stack cannot start, stop or be reached."""


def port_taken(service: str, host: str, port: int) -> StackError:
    env = f"HELICAL_STACK_{service.upper().replace('-', '_')}_PORT".replace("API_SERVER", "API")
    return StackError(
        "E501",
        f"port {host}:{port} for {service} is already in use by another program",
        f"stop that program (`ss -ltnp 'sport = :{port}'` shows it) or pick another port: {env}=NNNNN",
    )


def missing_binary(binary: str, install: str) -> StackError:
    return StackError("E502", f"`{binary}` was not found on PATH", f"install it: {install}")


def unhealthy(service: str, seconds: float, log_file: str, tail: str) -> StackError:
    return StackError(
        "E503",
        f"{service} did not become healthy within {seconds:.0f}s; last log lines:\n{tail}",
        f"read {log_file} (or `helical-airflow stack logs {service}`), fix the cause, then `stack up` again",
    )


def died(service: str, code: int | None, log_file: str, tail: str) -> StackError:
    return StackError(
        "E504",
        f"{service} exited (code {code}) while starting; last log lines:\n{tail}",
        f"read {log_file} (or `helical-airflow stack logs {service}`), fix the cause, then `stack up` again",
    )
