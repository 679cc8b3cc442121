"""One writer per shard: a lock file in the run folder (`shards/<i>.lock`) held while the shard is embedded.

A retry of a shard (Airflow retries a task whose worker died) must not run while an earlier attempt of the same
shard is still writing, e.g. an orphaned process of a killed worker. The lock is `fcntl.flock` on the lock file:
the kernel releases it when its holder exits, however it exits (SIGKILL, OOM kill), so the lock is "stolen" only
when the holder is provably dead, and never by a timer. A waiting attempt logs who holds it, then, once it has
the lock, finds the shard finished by the earlier attempt (and reuses it) or embeds it itself.

The lock file keeps the holder's pid, host and start time, for the log line of whoever waits. It is not removed
afterwards (removing a lock file someone waits on would let two writers in).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])
POLL_S = 1.0
NOTE_EVERY_S = 60.0


def lock_file(shard_file: Path) -> Path:
    """`shards/<i>.lock` next to `shards/<i>.npy`."""
    return shard_file.with_suffix(".lock")


@contextlib.contextmanager
def shard_lock(
    path: Path,
    wait_s: float | None = None,
    waiting: str = "an earlier attempt of this shard is still running",
    note_every_s: float = NOTE_EVERY_S,
) -> Iterator[None]:
    """Hold the lock at `path` (waiting while a live process holds it); TimeoutError after `wait_s` seconds. While
    it waits it logs `waiting` and the holder every `note_every_s` seconds (finetune.py's training lock reuses it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        started = time.monotonic()
        noted = -note_every_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - started
                if wait_s is not None and waited >= wait_s:
                    raise TimeoutError(f"{path} is still held after {waited:.0f}s by {holder(path)}") from None
                if waited - noted >= note_every_s:
                    log.warning("%s (%s); waiting for it", waiting, holder(path))
                    noted = waited
                time.sleep(POLL_S)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": datetime.now(UTC).isoformat()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock


def holder(path: Path) -> str:
    """Who holds (or last held) the lock, from its record."""
    try:
        record = json.loads(path.read_text() or "{}")
        return f"pid {record['pid']} on {record['host']} since {record['since']}"
    except (OSError, ValueError, KeyError):
        return "an unknown process"


def one_writer_per_shard[F: Callable[..., Any]](func: F) -> F:
    """Decorate `embed_shard(plan, index, ...)`: the whole call holds `shards/<index>.lock`."""

    @functools.wraps(func)
    def wrapper(plan: Any, index: int, *args: Any, **kwargs: Any) -> Any:
        if not 0 <= index < len(plan.shards):
            return func(plan, index, *args, **kwargs)  # its own error (E208) for a shard not in the plan
        with shard_lock(lock_file(plan.shard_file(index))):
            return func(plan, index, *args, **kwargs)

    return wrapper  # type: ignore[return-value]
