"""Where things live, from the environment, with defaults that work from a checkout.

One place so the CLI, the DAG, the launchers and the containers agree:
- HELICAL_AIRFLOW_DATA_DIR   input data folder (mounted at /opt/data in containers); default ./data
- HELICAL_AIRFLOW_OUTPUT_DIR where runs are written; default <data dir>/outputs
- HELICAL_AIRFLOW_CACHE_DIR  weights cache root (becomes helical's CACHE_DIR_HELICAL_PREFIX); default:
                             helical's own default (~/.cache/helical/models)
"""

from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    return Path(os.environ.get("HELICAL_AIRFLOW_DATA_DIR", "data")).resolve()


def output_dir() -> Path:
    configured = os.environ.get("HELICAL_AIRFLOW_OUTPUT_DIR")
    return Path(configured).resolve() if configured else data_dir() / "outputs"


def cache_dir() -> str | None:
    return os.environ.get("HELICAL_AIRFLOW_CACHE_DIR") or None
