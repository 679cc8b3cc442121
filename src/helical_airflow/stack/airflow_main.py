"""`airflow` as the local stack runs it: the same CLI, with the task-log servers bound to the stack's host.

Airflow 3.3's log server (`airflow.utils.serve_logs.core.serve_logs`, started by `celery worker` and
`triggerer`) always binds every interface (`host=""`: 0.0.0.0 and [::]) and has no host setting; upstream
adds one, `[logging] worker_log_server_host` (apache/airflow#60117). This entry point reads that same
setting (AIRFLOW__LOGGING__WORKER_LOG_SERVER_HOST, which `stack up` sets to 127.0.0.1) and passes it to
uvicorn when the log server asks for every interface; everything else is the stock `airflow` command.

Run as `python -m helical_airflow.stack.airflow_main celery worker ...`. The log server runs in a forked
child of the worker/triggerer, which inherits the patch.
"""

from __future__ import annotations

import sys
from typing import Any

from .. import settings

HOST_SETTING = "AIRFLOW__LOGGING__WORKER_LOG_SERVER_HOST"


def bind_log_servers(host: str) -> None:
    """Make uvicorn bind `host` where it was asked for every interface (what serve_logs asks for)."""
    import uvicorn

    real_run = uvicorn.run

    def run(app: Any, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("host") in ("", "0.0.0.0", "::"):
            kwargs["host"] = host
        return real_run(app, *args, **kwargs)

    uvicorn.run = run


def main() -> None:
    host = settings.get().env(HOST_SETTING)
    if host:
        bind_log_servers(host)
    from airflow.__main__ import main as airflow_main

    sys.argv[0] = "airflow"
    sys.exit(airflow_main())


if __name__ == "__main__":
    main()
