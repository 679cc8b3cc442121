"""How a mapping treats the StatsD names in recorded traffic: mapped (to what), dropped, or unmapped."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .lines import parse_line
from .mapping import Mapper


@dataclass(frozen=True)
class Outcome:
    name: str  # the StatsD name
    type: str
    action: str  # map, drop or unmapped
    metric: str  # Prometheus metric name ('' when dropped)
    labels: tuple[tuple[str, str], ...]


def read_lines(paths: Iterable[Path]) -> list[str]:
    """StatsD lines of capture files; `#` starts a comment line."""
    return [line for path in paths for line in Path(path).read_text().splitlines() if line.strip() and line[0] != "#"]


def classify(mapper: Mapper, lines: Iterable[str]) -> dict[tuple[str, str], Outcome]:
    """One outcome per distinct (StatsD name, type) in the lines."""
    seen: dict[tuple[str, str], Outcome] = {}
    for line in lines:
        events, _ = parse_line(line)
        for event in events:
            key = (event.name, event.type)
            if key in seen:
                continue
            match = mapper.lookup(event.name, event.type)
            if match is None:
                seen[key] = Outcome(event.name, event.type, "unmapped", "", ())
            elif match.dropped:
                seen[key] = Outcome(event.name, event.type, "drop", "", ())
            else:
                seen[key] = Outcome(event.name, event.type, "map", match.name, tuple(sorted(match.labels.items())))
    return seen


def summary(outcomes: Iterable[Outcome]) -> dict[str, int]:
    counts = {"map": 0, "drop": 0, "unmapped": 0}
    for outcome in outcomes:
        counts[outcome.action] += 1
    return counts


def check_files(mapper: Mapper, paths: list[Path]) -> int:
    outcomes = sorted(classify(mapper, read_lines(paths)).values(), key=lambda o: o.name)
    for o in outcomes:
        target = f"{o.metric}{{{', '.join(f'{k}={v}' for k, v in o.labels)}}}" if o.action == "map" else ""
        print(f"{o.action:9} {o.type:9} {o.name}  {target}")
    counts = summary(outcomes)
    print(f"\n{len(outcomes)} distinct names: {counts['map']} mapped, {counts['drop']} dropped, "
          f"{counts['unmapped']} unmapped")  # fmt: skip
    return 1 if counts["unmapped"] else 0
