"""`helical-airflow stack up | down | status | logs | password | env`: the local Airflow stack without Docker."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ..errors import HelicalAirflowError
from . import manager
from .airflow_env import airflow_env
from .config import StackConfig

stack_app = typer.Typer(
    help="The local Airflow stack without Docker: Postgres, Redis, Airflow api-server, scheduler, dag-processor, "
    "triggerer and a Celery worker as local processes (PID files and logs under the state dir).",
    no_args_is_help=True,
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

StateOpt = Annotated[
    Path | None, typer.Option(help="state folder (PID files, logs, database, secrets); env HELICAL_STACK_STATE_DIR")
]


def _cfg(state_dir: Path | None, **overrides: object) -> StackConfig:
    return StackConfig.from_env(state_dir=state_dir, **overrides)


def _fail(exc: HelicalAirflowError) -> typer.Exit:
    err.print(f"[bold red]error {exc.code}[/]: {exc.message}\n  [bold]fix[/]: {exc.hint}", highlight=False)
    return typer.Exit(exc.exit_code)


@stack_app.command()
def up(
    state_dir: StateOpt = None,
    api_port: Annotated[int | None, typer.Option(help="Airflow API/UI port (env HELICAL_STACK_API_PORT)")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="data folder (env HELICAL_AIRFLOW_DATA_DIR)")] = None,
    cache_dir: Annotated[str | None, typer.Option(help="weights cache (env HELICAL_AIRFLOW_CACHE_DIR)")] = None,
    monitoring: Annotated[
        bool | None, typer.Option(help="also start the monitoring services (env HELICAL_STACK_MONITORING, default on)")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Celery workers; the second has its own working folder and weights cache, sharing "
            "only the broker, the database and the outputs (env HELICAL_STACK_WORKERS, default 1)",
        ),
    ] = None,  # fmt: skip
    worker_cache: Annotated[
        list[Path] | None,
        typer.Option(
            help="weights cache of worker 2 (repeat for 3, ...); default <state>/worker-2/cache, filled with "
            "`helical-airflow models download --cache-dir DIR`"
        ),
    ] = None,  # fmt: skip
) -> None:
    """Start the stack (what is already running is left alone); the first successful start prints the admin password."""
    cfg = _cfg(state_dir, monitoring=monitoring, workers=workers,
               worker_cache_dirs=tuple(str(p.resolve()) for p in worker_cache) if worker_cache else None)  # fmt: skip
    if api_port:
        cfg.ports["api"] = api_port
    if data_dir:
        cfg.data_dir = data_dir.resolve()
        cfg.output_dir = cfg.data_dir / "outputs"
    if cache_dir:
        cfg.cache_dir = str(Path(cache_dir).resolve())
    try:
        secrets, _ = manager.up(cfg, echo=err.print)
    except HelicalAirflowError as exc:
        raise _fail(exc) from None
    password = manager.take_password_to_show(cfg, secrets)  # after a successful start, never before
    if password:
        out.print(
            f"[bold]Generated credentials[/]: Airflow user [bold]admin[/], password [bold]{password}[/]\n"
            f"  all secrets: {cfg.secrets_file} (mode 0600); show it again: helical-airflow stack password",
            highlight=False,
        )
    out.print(f"UI and REST API: {cfg.api_url}  (REST: {cfg.api_url}/api/v2, token: POST {cfg.api_url}/auth/token)")


@stack_app.command()
def down(
    state_dir: StateOpt = None,
    purge: Annotated[bool, typer.Option(help="also delete the state folder: database, logs, secrets")] = False,
) -> None:
    """Stop every service of the stack (by PID file and process tree)."""
    stopped = manager.down(_cfg(state_dir), echo=err.print, purge=purge)
    out.print(f"stopped {len(stopped)} service(s)")


@stack_app.command()
def status(state_dir: StateOpt = None) -> None:
    """Each service: PID, health, port, log file. Exit code 1 if any is down or unhealthy."""
    cfg = _cfg(state_dir)
    try:
        rows = manager.status(cfg)
    except HelicalAirflowError as exc:
        raise _fail(exc) from None
    table = Table(title=f"local stack ({cfg.state_dir})")
    for col in ("service", "pid", "state", "port", "log"):
        table.add_column(col)
    for row in rows:
        state = "stopped" if row.healthy is None else ("healthy" if row.healthy else "[red]unhealthy[/]")
        table.add_row(row.name, str(row.pid or "-"), state, str(row.port or "-"), str(row.log_file))
    out.print(table if rows else "the stack has never been started here (helical-airflow stack up)")
    if not rows or any(not row.healthy for row in rows):
        raise typer.Exit(1)


@stack_app.command()
def password(state_dir: StateOpt = None) -> None:
    """Print the Airflow admin user's password (from the stack's 0600 secrets file)."""
    cfg = _cfg(state_dir)
    if not cfg.secrets_file.is_file():
        raise _fail(HelicalAirflowError("E509", "the stack has never been started here", "helical-airflow stack up"))
    print(json.loads(cfg.secrets_file.read_text())["admin_password"])


@stack_app.command()
def env(state_dir: StateOpt = None) -> None:
    """Print `export ...` lines for using the `airflow` CLI against the stack: eval "$(helical-airflow stack env)".

    They contain the stack's secrets: do not paste them anywhere.
    """
    cfg = _cfg(state_dir)
    if not cfg.secrets_file.is_file():
        raise _fail(HelicalAirflowError("E509", "the stack has never been started here", "helical-airflow stack up"))
    saved = manager.saved_config(cfg)
    for key, value in sorted(airflow_env(saved, json.loads(cfg.secrets_file.read_text())).items()):
        print(f"export {key}={shlex.quote(value)}")


@stack_app.command()
def logs(
    service: Annotated[
        str,
        typer.Argument(help="postgres, redis, api-server, scheduler, dag-processor, triggerer, worker, bootstrap, ..."),
    ],  # fmt: skip
    lines: Annotated[int, typer.Option("--lines", "-n", help="how many lines from the end")] = 50,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing new lines")] = False,
    state_dir: StateOpt = None,
) -> None:
    """Print a service's log."""
    try:
        for line in manager.log_lines(_cfg(state_dir), service, lines, follow):
            print(line)
    except HelicalAirflowError as exc:
        raise _fail(exc) from None
    except KeyboardInterrupt:
        pass
