"""Run a function in a child process with a deadline and a memory cap: a hostile input can fail, never hang.

h5py/HDF5 can spin for minutes (or crash) inside C code on a corrupted file, where no Python timeout
reaches it. `call` runs the work in a fresh interpreter (`python -c`, so nothing of the caller is
inherited: no threads, no `__main__` re-import as multiprocessing would do, safe from Airflow's task runner
and Celery), caps the child's address space (RLIMIT_AS, on top of what its imports map), and SIGKILLs its
process group at the deadline. The child dies with its parent (PR_SET_PDEATHSIG). The deadline starts once
the child has imported what it needs (the function's module), so start-up is not charged to it.

The caller gets the result, or a `BoundExceeded` saying which bound was hit: "timeout", "memory" or
"crash" (the child died or raised).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pickle
import resource
import select
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any, Literal

Bound = Literal["timeout", "memory", "crash"]
STARTUP_TIMEOUT_S = 120.0  # importing the function's module (numpy, h5py, ...) on a busy machine
READY = b"R"
PR_SET_PDEATHSIG = 1


class BoundExceeded(RuntimeError):
    """The child ran past its deadline ("timeout"), its memory cap ("memory"), or died/raised ("crash")."""

    def __init__(self, kind: Bound, detail: str, seconds: float) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind: Bound = kind
        self.detail = detail
        self.seconds = seconds


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send `sig` to this process when its parent exits (Linux; a no-op elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)


def parent_death_preexec(sig: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A `preexec_fn` for subprocess.Popen: the child gets `sig` when the thread that started it exits (Linux).

    prctl is looked up here, in the parent, so the forked child only makes one system call before exec.
    None (no preexec_fn) where there is no prctl.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)

    return arm


def _address_space_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def _serve() -> None:
    """The child: read (parent pid, func, args, memory_mb) from stdin, answer ready, run, pickle the outcome."""
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # prints of the function must not mix with the pickled answer
    parent, func, args, memory_mb = pickle.load(sys.stdin.buffer)  # imports func's module: the "start-up"
    die_with_parent()
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)
    if memory_mb:
        limit = _address_space_bytes() + memory_mb * 2**20
        with contextlib.suppress(ValueError, OSError):  # a lower hard limit: the deadline still holds
            resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    out.write(READY)
    out.flush()
    try:
        outcome: tuple[str, Any] = ("ok", func(*args))
    except MemoryError:
        outcome = ("memory", "the child ran out of its memory budget")
    except BaseException as exc:  # noqa: BLE001 - everything is reported to the parent, nothing escapes
        last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
        where = f" at {last[0].filename}:{last[0].lineno}" if last else ""
        outcome = ("crash", f"{type(exc).__name__}: {exc}{where}")
    try:
        data = pickle.dumps(outcome)
    except MemoryError:
        data = pickle.dumps(("memory", "the child ran out of its memory budget"))
    out.write(data)
    out.flush()


def call(func: Callable[..., Any], *args: Any, timeout_s: float, memory_mb: int | None = None) -> Any:
    """`func(*args)` in a child process; its return value, or BoundExceeded. func must be importable by name."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "from helical_airflow.bounded import _serve; _serve()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: the kill at the deadline takes everything it started
    )
    assert proc.stdin is not None and proc.stdout is not None
    started = time.monotonic()
    try:
        try:
            proc.stdin.write(pickle.dumps((os.getpid(), func, args, memory_mb)))
            proc.stdin.close()
        except BrokenPipeError:
            pass  # it died at once: reported below
        proc.stdin = None  # sent and closed: communicate() below only reads
        if not _wait_ready(proc):
            proc.wait(5)
            raise BoundExceeded("crash", _exit_reason(proc, "while starting"), time.monotonic() - started)
        started = time.monotonic()
        try:
            data, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise BoundExceeded(
                "timeout", f"still running after {timeout_s:.1f}s", time.monotonic() - started
            ) from None
        try:
            kind, value = pickle.loads(data)
        except (pickle.UnpicklingError, EOFError, ValueError):
            raise BoundExceeded("crash", _exit_reason(proc, err.decode(errors="replace")[-300:]),
                                time.monotonic() - started) from None  # fmt: skip
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()
    if kind == "ok":
        return value
    raise BoundExceeded(kind, value, time.monotonic() - started)


def _wait_ready(proc: subprocess.Popen[bytes]) -> bool:
    assert proc.stdout is not None
    readable, _, _ = select.select([proc.stdout], [], [], STARTUP_TIMEOUT_S)
    return bool(readable) and os.read(proc.stdout.fileno(), 1) == READY


def _exit_reason(proc: subprocess.Popen[bytes], detail: str) -> str:
    code = proc.poll()
    if code is None:
        return f"the child did not answer ({detail})"
    if code < 0:
        return f"the child was killed by {signal.Signals(-code).name} ({detail})"
    return f"the child exited with code {code} without a result ({detail})"
