"""Structured logs: one JSON object per line, with the run key, shard, model and dataset of what is running.

`helical-airflow --log-format json` (or HELICAL_AIRFLOW_LOG_FORMAT=json, which airflow/config/airflow.env sets
for both stacks, so every shard process a worker starts logs this way) writes lines like

    {"time": "2026-12-01T20:53:21.123Z", "level": "info", "logger": "helical_airflow.embed",
     "message": "shard 2 embedded 200 cells in 0.13s", "run_key": "4731183ee9044a83", "shard": 2,
     "model": "geneformer", "dataset": "sample"}

The Airflow task log wraps each of them as the `event` of its own JSON line; Promtail
(monitoring/promtail/promtail.yml) unpacks both and labels the stream with level, model and run_key.
The fields come from `log_context(...)`, a context variable, so helical's own log lines get them too.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from . import settings

FORMAT_ENV = "HELICAL_AIRFLOW_LOG_FORMAT"
CONTEXT_FIELDS = ("run_key", "shard", "model", "dataset")
_context: contextvars.ContextVar[tuple[tuple[str, Any], ...]] = contextvars.ContextVar(
    "helical_airflow_log_context", default=()
)


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add fields (run_key=..., shard=..., model=...) to every log record made inside the block."""
    merged = {**dict(_context.get()), **{k: v for k, v in fields.items() if v is not None}}
    token = _context.set(tuple(merged.items()))
    try:
        yield
    finally:
        _context.reset(token)


def current_context() -> dict[str, Any]:
    return dict(_context.get())


class ContextFilter(logging.Filter):
    """Copies the log context onto each record (so any formatter can use it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def json_formatter() -> logging.Formatter:
    class _Formatter(JsonFormatter):
        def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message: dict[str, Any]) -> None:
            super().add_fields(log_data, record, message)
            log_data["time"] = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
            log_data["level"] = record.levelname.lower()  # as Airflow and Loki write it
            log_data["logger"] = record.name
            for key in CONTEXT_FIELDS:
                value = getattr(record, key, None)
                if value is not None:
                    log_data[key] = value
            if record.exc_info and "exc_info" not in log_data:
                log_data["exc_info"] = self.formatException(record.exc_info)

    return _Formatter("%(message)s", reserved_attrs=[*_RESERVED, *CONTEXT_FIELDS], json_ensure_ascii=False)


_RESERVED = [
    "args", "asctime", "created", "exc_info", "exc_text", "filename", "funcName", "levelname", "levelno", "lineno",
    "module", "msecs", "msg", "name", "pathname", "process", "processName", "relativeCreated", "stack_info",
    "thread", "threadName", "taskName",
]  # fmt: skip


def json_handler(stream: Any = None) -> logging.Handler:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(json_formatter())
    handler.addFilter(ContextFilter())
    return handler


def wanted_format(explicit: str | None = None) -> str:
    value = (explicit or settings.get().log_format or "rich").strip().lower()
    return value if value in ("rich", "json") else "rich"


class RunLogFile(logging.Handler):
    """The details of one `helical-airflow run`, in `<run folder>/run.log`: every record at this handler's level
    (ours, helical's, one line per shard), while the console keeps what a user acts on (cli.py).

    Logging starts before the run folder is known (validation, the plan): records are kept in memory until
    `open(path)` names the file, then written there, appended (a resumed run adds to the same file). A run that
    never gets a plan (an input refused by validation) writes no file: validation leaves no trace.
    """

    FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

    def __init__(self, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.setFormatter(logging.Formatter(self.FORMAT))
        self._pending: list[logging.LogRecord] = []
        self._file: logging.FileHandler | None = None
        self.path: Path | None = None

    def open(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = logging.FileHandler(path, encoding="utf-8")
        self._file.setFormatter(self.formatter)
        self.path = path
        for record in self._pending:
            self._file.emit(record)
        self._pending.clear()

    def emit(self, record: logging.LogRecord) -> None:
        if self._file is None:
            self._pending.append(record)
        else:
            self._file.emit(record)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        super().close()
