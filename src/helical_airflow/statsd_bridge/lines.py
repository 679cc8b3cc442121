"""StatsD line protocol -> events, as statsd_exporter's pkg/line parses it.

`name:value|type[|@rate][|#tag:v,...]`, several `value|type` samples per line separated by `:`.
Types: `c` counter (value divided by the sample rate), `g` gauge (`+n` / `-n` are deltas), `ms` timer
(milliseconds, observed in seconds), `h` / `d` histogram / distribution (observed as is; a sample
rate of 0.1 observes the value 10 times). Sets (`s`) are not supported, like statsd_exporter.
Tags: DogStatsD (`|#k:v`) and InfluxDB (`name,k=v`) become labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .mapping import MetricType

_TYPES: dict[str, MetricType] = {"c": "counter", "g": "gauge", "ms": "observer", "h": "observer", "d": "observer"}


@dataclass
class Event:
    name: str
    type: MetricType
    value: float
    relative: bool = False  # gauge delta
    labels: dict[str, str] = field(default_factory=dict)


class LineError(ValueError):
    """A malformed sample; `reason` matches statsd_exporter's sample_errors reasons."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _tags(text: str, sep: str, labels: dict[str, str]) -> None:
    for tag in text.split(","):
        key, found, value = tag.lstrip("#").partition(sep)
        if found and key and value:
            labels[key] = value


def parse_line(line: str) -> tuple[list[Event], list[str]]:
    """Events of one line, plus the reasons of any samples that had to be skipped."""
    line = line.strip()
    if not line:
        return [], []
    name, found, rest = line.partition(":")
    if not found or not name:
        return [], ["malformed_line"]
    labels: dict[str, str] = {}
    if "," in name:  # InfluxDB-style tags
        name, _, tags = name.partition(",")
        _tags(tags, "=", labels)
    events: list[Event] = []
    errors: list[str] = []
    samples = [rest] if "|#" in rest else rest.split(":")
    for sample in samples:
        try:
            events.extend(_sample(name, sample, dict(labels)))
        except LineError as exc:
            errors.append(exc.reason)
    return events, errors


def _sample(name: str, sample: str, labels: dict[str, str]) -> list[Event]:
    parts = sample.split("|")
    if len(parts) < 2:
        raise LineError("malformed_component")
    value_text, stat = parts[0], parts[1]
    try:
        value = float(value_text)
    except ValueError:
        raise LineError("malformed_value") from None
    repeat = 1
    for extra in parts[2:]:
        if not extra:
            raise LineError("malformed_component")
        if extra[0] == "@":
            try:
                rate = float(extra[1:]) or 1.0
            except ValueError:
                raise LineError("invalid_sample_factor") from None
            if stat == "c":
                value /= rate
            elif stat in ("ms", "h", "d"):
                repeat = int(1 / rate)
        elif extra[0] == "#":
            _tags(extra[1:], ":", labels)
        else:
            raise LineError("invalid_sample_factor")
    metric_type = _TYPES.get(stat)
    if metric_type is None:
        raise LineError("illegal_event")
    if stat == "ms":
        value /= 1000.0  # Prometheus measures time in seconds
    relative = stat == "g" and value_text[:1] in "+-"
    return [Event(name, metric_type, value, relative, labels) for _ in range(repeat)]
