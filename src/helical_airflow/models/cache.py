"""helical's weights-cache layout, known here without importing helical.

helical computes `CACHE_DIR_HELICAL = $CACHE_DIR_HELICAL_PREFIX/.cache/helical/models` (or
`~/.cache/helical/models`) once, at import time, and each model config lists the files it downloads
relative to that folder. Each family's `files.py` mirrors helical 3.1.4's lists; a test checks them against
helical's own `list_of_files_to_download` so a helical upgrade cannot silently change the layout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: marker file at the cache root (the prefix) written by `models fixture`
FIXTURE_MARKER = "FIXTURE.json"

#: helical's symbol <-> Ensembl table (helical.utils.mapping), downloaded on first use
ENSEMBL_MAPPING_FILE = "hsapiens_pybiomart.csv"


def cache_root(cache_dir: str | None) -> Path:
    """The prefix helical is pointed at (CACHE_DIR_HELICAL_PREFIX); None means helical's default, $HOME."""
    return Path(cache_dir).expanduser().resolve() if cache_dir else Path.home()


def models_dir(cache_dir: str | None) -> Path:
    """Where helical keeps model files under that prefix."""
    return cache_root(cache_dir) / ".cache" / "helical" / "models"


def missing_hint(model: str, has_fixture: bool) -> str:
    download = f"online: helical-airflow models download {model} --cache-dir DIR, then pass --cache-dir DIR"
    if has_fixture:
        offline = "offline: build the fixture cache (helical-airflow models fixture --out DIR) and pass --cache-dir DIR"
        return f"{offline}; {download}"
    return f"this model has no offline fixture; {download}"


def is_fixture_cache(cache_dir: str | None) -> bool:
    """True when the cache was written by `models fixture` (random weights, synthetic vocabulary)."""
    return (cache_root(cache_dir) / FIXTURE_MARKER).is_file()


def fixture_info(cache_dir: str | None) -> dict[str, Any] | None:
    """The fixture marker's contents, or None for a real cache."""
    marker = cache_root(cache_dir) / FIXTURE_MARKER
    if not marker.is_file():
        return None
    info: dict[str, Any] = json.loads(marker.read_text())
    return info
