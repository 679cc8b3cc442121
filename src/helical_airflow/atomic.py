"""Atomic file writes (a killed process never leaves a half-written file), below every module that writes.

Files get the mode a plain `open()` would give them (0666 less the process umask), not mkstemp's 0600: with
the local stack's umask 027 (HELICAL_STACK_UMASK) the owner's group can read every output, others cannot.
Split from store.py (which re-exports these) so that seqio can write its record index without importing store.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel


def current_umask() -> int:
    """The process umask, read without changing it (Linux: /proc; elsewhere set and restored at once)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write to a temp file in the same folder, fsync, then rename over the target (mode: 0666 less the umask)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_npy(path: Path, array: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, array)

    _atomic(path, write)


def write_text(path: Path, text: str) -> None:
    def write(tmp: Path) -> None:
        tmp.write_text(text)

    _atomic(path, write)


def write_json(path: Path, data: BaseModel | dict[str, Any]) -> None:
    text = data.model_dump_json(indent=2) if isinstance(data, BaseModel) else json.dumps(data, indent=2)
    write_text(path, text + "\n")


def write_with(path: Path, writer: Callable[[Path], None]) -> None:
    """Atomic write through any writer that takes a file path (e.g. AnnData.write_h5ad)."""
    _atomic(path, writer)
