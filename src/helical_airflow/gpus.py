"""One shard group per GPU: which GPUs this worker has, and a lease on one of them for the duration of a launch.

The GPUs are HELICAL_AIRFLOW_GPUS: `auto` (the default) finds them without importing torch (at DAG parse time or
in a Celery worker that must stay light): CUDA_VISIBLE_DEVICES when the worker is already restricted to some
(read as CUDA reads it: the ids up to the first invalid one or `-1`; set but empty is no GPU), else one per line
of `nvidia-smi -L`, else none. A number N means the first N of those (devices 0..N-1 on an unrestricted
worker), a list (`0,2,5`) those ids, `0` none (no pinning: the shard process sees what the worker sees, as
before). Ids are the machine's (`nvidia-smi -L`'s): a group's process gets CUDA_VISIBLE_DEVICES=<its id>, which
replaces the worker's, and HELICAL_AIRFLOW_GPU_ID=<its id>, which its manifest records (embed._gpu_id).

A lease is `fcntl.flock` on `<lock dir>/gpu<id>.lock` (HELICAL_AIRFLOW_GPU_LOCK_DIR; machine-local, so every
worker and container launcher on the machine shares the same set), like shardlock.py: the kernel releases it when
its holder exits however it exits (SIGKILL, OOM kill), so a crashed launch never keeps a GPU. The launcher (the
Airflow task process) holds it while its embed process runs and pins that process to the GPU: the local launcher
through CUDA_VISIBLE_DEVICES, the docker launcher through DeviceRequest(device_ids=[id]). With N GPUs the `gpu`
pool has N slots (stack/config.py), so N groups run at once, one per GPU; a launch that finds every GPU leased
(more slots than GPUs) waits for one to free rather than share a device.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from . import settings
from .errors import ConfigError

log = logging.getLogger(__name__)
POLL_S = 0.5
NOTE_EVERY_S = 60.0
_NVIDIA_SMI_TIMEOUT_S = 20.0
_GPU_LINE = re.compile(r"^GPU (\d+):", re.MULTILINE)
#: what CUDA_VISIBLE_DEVICES accepts: an index, or a GPU or MIG instance UUID as `nvidia-smi -L` prints it
_DEVICE_ID = re.compile(r"\d+|(GPU|MIG)-[\w-]+")


def parse_gpus(raw: str, visible: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The device ids HELICAL_AIRFLOW_GPUS names (`auto` is resolved by `devices()`); E531 when it is not one.
    `visible`: the worker's CUDA_VISIBLE_DEVICES (`visible_devices()`), which a count takes its ids from."""
    raw = raw.strip()
    if not re.fullmatch(r"\d+", raw):
        ids = tuple(part.strip() for part in raw.split(","))
        if raw and all(_DEVICE_ID.fullmatch(part) for part in ids) and len(set(ids)) == len(ids):
            return ids
        raise ConfigError(
            "E531",
            f"HELICAL_AIRFLOW_GPUS={raw!r} is not a GPU count or a list of device ids",
            "set it to auto (detect them), a count (e.g. 4), or distinct ids as nvidia-smi -L lists them (e.g. "
            "0,2,5 or GPU-<uuid>,...)",
        )
    n = int(raw)
    if visible is None:
        return tuple(str(i) for i in range(n))
    if n > len(visible):  # "2" on a worker restricted to GPU 3 would pin a group to GPU 1: not the worker's
        raise ConfigError(
            "E531",
            f"HELICAL_AIRFLOW_GPUS={raw} asks for more GPUs than this worker's CUDA_VISIBLE_DEVICES="
            f"{','.join(visible) or '(none)'} lets it use",
            f"set HELICAL_AIRFLOW_GPUS to auto or at most {len(visible)}, or widen CUDA_VISIBLE_DEVICES",
        )
    return visible[:n]


def nvidia_smi_count() -> int:
    """GPUs `nvidia-smi -L` lists (0 when it is missing or fails: a CPU machine)."""
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return 0
    try:
        out = subprocess.run([binary, "-L"], capture_output=True, text=True, timeout=_NVIDIA_SMI_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("nvidia-smi -L failed (%s): no GPU pinning", exc)
        return 0
    return len(_GPU_LINE.findall(out.stdout)) if out.returncode == 0 else 0


def parse_visible(value: str | None) -> tuple[str, ...] | None:
    """The GPU ids a CUDA_VISIBLE_DEVICES value lets a process see, as the CUDA runtime reads it (and torch's
    _parse_visible_devices): None when unset (every GPU); else the ids up to the first that is not one (`-1`,
    `none`, a UUID after an index), so "" and "-1" are no GPU and "0,-1,1" is GPU 0 alone; a repeated id hides
    every GPU."""
    if value is None:
        return None
    ids: list[str] = []
    for part in (p.strip() for p in value.split(",")):
        if not _DEVICE_ID.fullmatch(part) or (ids and part.isdigit() != ids[0].isdigit()):
            break
        part = str(int(part)) if part.isdigit() else part  # CUDA reads "02" as device 2
        if part in ids:
            return ()
        ids.append(part)
    return tuple(ids)


def visible_devices() -> tuple[str, ...] | None:
    """This process's CUDA_VISIBLE_DEVICES, read as CUDA reads it (`parse_visible`); None: unset, every GPU."""
    return parse_visible(settings.get().raw.get("CUDA_VISIBLE_DEVICES"))


def devices() -> tuple[str, ...]:
    """This worker's GPU ids, one lease each (empty: no GPU, nothing is pinned)."""
    raw = settings.get().gpus
    visible = visible_devices()
    if raw.strip().lower() != "auto":
        return parse_gpus(raw, visible)
    return visible if visible is not None else tuple(str(i) for i in range(nvidia_smi_count()))


def count() -> int:
    return len(devices())


def lock_path(device: str, lock_dir: Path | None = None) -> Path:
    return (lock_dir or settings.get().gpu_lock_dir) / f"gpu{device}.lock"


def _try_lock(path: Path) -> int | None:
    """An fd holding the flock on `path`, or None when a live process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    record = {"pid": os.getpid(), "host": socket.gethostname(), "since": datetime.now(UTC).isoformat()}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)
    return fd


@contextlib.contextmanager
def lease(
    ids: Sequence[str] | None = None, lock_dir: Path | None = None, wait_s: float | None = None
) -> Iterator[str | None]:
    """Hold one free GPU of `ids` (default: `devices()`) while the body runs; yields its id, or None when there is
    no GPU. Waits while every GPU is leased; TimeoutError after `wait_s` seconds."""
    ids = devices() if ids is None else tuple(ids)
    if not ids:
        yield None
        return
    folder = lock_dir or settings.get().gpu_lock_dir
    folder.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    noted = -NOTE_EVERY_S
    while True:
        for device in ids:
            fd = _try_lock(lock_path(device, folder))
            if fd is not None:
                try:
                    yield device
                finally:
                    os.close(fd)  # releases the flock
                return
        waited = time.monotonic() - started
        if wait_s is not None and waited >= wait_s:
            raise TimeoutError(f"all {len(ids)} GPU(s) still leased after {waited:.0f}s")
        if waited - noted >= NOTE_EVERY_S:
            log.warning("all %d GPU(s) are leased by other shard groups (more gpu_pool slots than GPUs?); waiting",
                        len(ids))  # fmt: skip
            noted = waited
        time.sleep(POLL_S)


def default_pool_slots() -> int:
    """The `gpu_pool` size a worker's GPUs call for: one slot per GPU, at least one (a CPU machine still runs the
    GPU models' fixtures on its CPU)."""
    return max(1, count())
