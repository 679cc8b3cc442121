"""bench/scale.py's peak-memory reading: a step's figure is its own peak, not the bench's (Linux folds the RSS a
process had before exec, its parent's at fork, into ru_maxrss; the launcher forks from a small process)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def _scale() -> ModuleType:
    sys.path.insert(0, str(REPO / "bench"))
    try:
        spec = importlib.util.spec_from_file_location("bench_scale", REPO / "bench" / "scale.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(REPO / "bench"))


def test_a_step_reads_its_own_peak_not_the_benchs() -> None:
    scale = _scale()
    ballast = np.ones(300 * 2**20 // 8)  # this process: 300 MB more, every page touched
    allocate = "import sys; b = bytearray(int(sys.argv[1]) * 2**20); print('done')"
    small_s, small_mb, out = scale.measured([sys.executable, "-c", allocate, "0"])
    big_s, big_mb, _ = scale.measured([sys.executable, "-c", allocate, "150"])
    assert out.strip() == "done" and small_s > 0 and big_s > 0
    assert small_mb < 100, small_mb  # a bare Python; wait4 on it directly read >= 300 MB here
    assert 150 <= big_mb < 250, big_mb  # its 150 MB is seen
    assert ballast[-1] == 1.0
