"""bounded.call: the child's result, or the bound it hit (deadline, memory cap, crash), never a hang."""

from __future__ import annotations

import os
import time

import pytest

from helical_airflow import bounded


def test_returns_the_childs_result_and_runs_in_another_process() -> None:
    assert bounded.call(os.getpid, timeout_s=10) != os.getpid()
    assert bounded.call(divmod, 17, 5, timeout_s=10) == (3, 2)


def test_deadline_kills_a_child_that_hangs() -> None:
    started = time.monotonic()
    with pytest.raises(bounded.BoundExceeded) as raised:
        bounded.call(time.sleep, 60, timeout_s=1.0)
    assert raised.value.kind == "timeout"
    assert 1.0 <= time.monotonic() - started < 5


def test_memory_cap_stops_a_large_allocation() -> None:
    with pytest.raises(bounded.BoundExceeded) as raised:
        bounded.call(bytearray, 8 * 2**30, timeout_s=20, memory_mb=256)
    assert raised.value.kind == "memory"
    assert bounded.call(bytearray, 2**20, timeout_s=20, memory_mb=256) == bytearray(2**20)


def test_a_child_that_dies_or_raises_is_a_crash() -> None:
    with pytest.raises(bounded.BoundExceeded) as raised:
        bounded.call(os.abort, timeout_s=20)
    assert raised.value.kind == "crash" and "SIGABRT" in raised.value.detail
    with pytest.raises(bounded.BoundExceeded) as raised:
        bounded.call(int, "not a number", timeout_s=20)
    assert raised.value.kind == "crash" and "ValueError" in raised.value.detail
