"""A small StatsD -> Prometheus bridge for the local stack, where statsd_exporter cannot be installed.

It reads the same mapping file as prom/statsd-exporter (monitoring/statsd/mapping.yml) and
implements the part of statsd_exporter's format and behaviour that file uses; see mapping.py for the
exact semantics. The Docker stack always runs the real prom/statsd-exporter.
"""

from .lines import Event, parse_line
from .mapping import Mapper, MappingError, Match, Rule
from .registry import Registry

__all__ = ["Event", "Mapper", "MappingError", "Match", "Registry", "Rule", "parse_line"]
