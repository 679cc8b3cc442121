"""One-time Airflow set-up, run in the stack's Airflow environment: migrate the metadata DB, create the pools.

Run as `python -m helical_airflow.stack.bootstrap GPU_POOL_SLOTS` (one process instead of several
`airflow` CLI calls, which each pay Airflow's import time).
"""

from __future__ import annotations

import sys

from ..models import MODELS


def main(gpu_pool_slots: int) -> None:
    from airflow.models.pool import Pool
    from airflow.utils.db import upgradedb

    upgradedb()
    # every pool a model's resource profile names (default_pool exists already)
    for pool in sorted({spec.profile.pool for spec in MODELS.values()} - {"default_pool"}):
        Pool.create_or_update_pool(
            pool, slots=gpu_pool_slots, description="GPU slots for models whose profile needs a GPU",
            include_deferred=False,
        )  # fmt: skip
        print(f"pool {pool}: {gpu_pool_slots} slot(s)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
