"""Monitoring services of the local stack (Prometheus, StatsD bridge, ...): owned by the observability work."""

from __future__ import annotations

from .config import StackConfig
from .process import Service


def monitoring_services(cfg: StackConfig) -> list[Service]:
    return []
