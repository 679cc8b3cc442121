"""The runner's own metrics over StatsD (placeholder API; the observability work fills it in).

Sends nothing unless HELICAL_AIRFLOW_STATSD_HOST is set, so library use stays quiet.
"""

from __future__ import annotations

from .spec import Plan, ShardResult


def emit_shard(plan: Plan, result: ShardResult) -> None:
    """cells embedded, cells/s, shard seconds, model load seconds, peak RSS, peak GPU memory."""


def emit_failure(plan: Plan, code: str) -> None:
    """One failure of a shard, by error code."""
