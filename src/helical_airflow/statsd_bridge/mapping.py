"""The statsd_exporter mapping format (the part monitoring/statsd/mapping.yml uses), loaded and matched.

Semantics follow prometheus/statsd_exporter (pkg/mapper):
- `match_type: glob` (default): `*` stands for exactly one dot-separated component and captures it;
  glob rules are tried in file order and the first match wins.
- `match_type: regex`: an unanchored regular-expression search, tried in file order, but only when no
  glob rule matched (statsd_exporter runs its glob automaton first).
- `match_metric_type` (counter, gauge, observer; `timer` is an old spelling of observer) limits a rule
  to one StatsD type.
- `name` and label values are templates: `$1` / `${1}` insert the n-th capture; a reference that is
  not a capture (`$1_total` reads as the group named `1_total`) becomes the empty string, so write
  `${1}_total`.
- `action: drop` discards the sample; `observer_type` (histogram or summary, default from `defaults`,
  else summary) with `histogram_options.buckets` / `summary_options.quantiles|max_age`; `ttl`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ..errors import ConfigError

MetricType = Literal["counter", "gauge", "observer"]

# Validation patterns copied from statsd_exporter so a file the bridge accepts also loads there.
_FIRST = r"[a-zA-Z_](-?[a-zA-Z0-9_])*"
_NEXT = r"[a-zA-Z0-9_](-?[a-zA-Z0-9_])*"
GLOB_LINE_RE = re.compile(rf"^(\*|{_FIRST})(\.\*|\.{_NEXT})*$")
_TEMPLATE = r"(\$\{?\d+\}?)"
METRIC_NAME_RE = re.compile(rf"^([a-zA-Z_]|{_TEMPLATE})([a-zA-Z0-9_]|{_TEMPLATE})*$")
LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]+$")
_REFERENCE_RE = re.compile(r"\$\{?([a-zA-Z0-9_$]+)\}?")

DEFAULT_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]  # client_golang DefBuckets
DEFAULT_QUANTILES = [(0.5, 0.05), (0.9, 0.01), (0.99, 0.001)]
DEFAULT_MAX_AGE_S = 600.0  # client_golang DefMaxAge: quantiles cover the last 10 minutes
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class MappingError(ConfigError):
    """The mapping file is not valid statsd_exporter mapping YAML (or uses what the bridge lacks)."""

    def __init__(self, message: str) -> None:
        super().__init__(
            "E601",
            message,
            "fix monitoring/statsd/mapping.yml; the format: github.com/prometheus/statsd_exporter (Metric Mapping)",
        )


@dataclass
class Rule:
    match: str
    name: str
    match_type: str = "glob"  # glob or regex
    labels: dict[str, str] = field(default_factory=dict)
    action: str = "map"  # map or drop
    match_metric_type: MetricType | None = None
    observer_type: str = "summary"  # histogram or summary
    buckets: list[float] = field(default_factory=lambda: list(DEFAULT_BUCKETS))
    quantiles: list[tuple[float, float]] = field(default_factory=lambda: list(DEFAULT_QUANTILES))
    max_age_s: float = DEFAULT_MAX_AGE_S
    ttl_s: float = 0.0  # 0: never expires
    help: str = ""
    index: int = 0  # position in the file, for messages
    pattern: re.Pattern[str] = field(default=re.compile(""), repr=False)


@dataclass(frozen=True)
class Match:
    """The result of looking a StatsD name up: which rule, and the metric name and labels it produced."""

    rule: Rule
    name: str
    labels: dict[str, str]

    @property
    def dropped(self) -> bool:
        return self.rule.action == "drop"


def parse_duration(value: Any) -> float:
    """A Go duration (`90s`, `1h30m`, `0`) in seconds."""
    if isinstance(value, int | float):
        return float(value) / 1e9  # yaml.v2 reads a bare number into time.Duration as nanoseconds
    text = str(value).strip()
    parts = _DURATION_RE.findall(text)
    if not parts or "".join(num + unit for num, unit in parts) != text:
        raise ValueError(f"invalid duration {value!r}: use Go syntax such as 30s, 10m, 2h")
    return sum(float(num) * _UNIT_S[unit] for num, unit in parts)


def expand(template: str, groups: list[str], named: dict[str, str] | None = None) -> str:
    """Replace `$n` / `${n}` by the n-th capture (1-based); anything else referenced becomes ''."""

    def repl(m: re.Match[str]) -> str:
        ref = m.group(1)
        if ref.isdigit() and 1 <= int(ref) <= len(groups):
            return groups[int(ref) - 1]
        return (named or {}).get(ref, "")

    return _REFERENCE_RE.sub(repl, template)


def _glob_regex(match: str) -> re.Pattern[str]:
    parts = [r"([^.]*)" if part == "*" else re.escape(part) for part in match.split(".")]
    return re.compile(r"\.".join(parts))  # used with fullmatch


def _metric_type(value: Any, where: str) -> MetricType | None:
    if value in (None, ""):
        return None
    if value == "timer":
        return "observer"
    if value not in ("counter", "gauge", "observer"):
        raise MappingError(f"{where}: match_metric_type {value!r} is not counter, gauge or observer")
    return value


def _observer_options(raw: dict[str, Any], defaults: dict[str, Any], rule: Rule, where: str) -> None:
    observer = raw.get("observer_type") or raw.get("timer_type") or defaults.get("observer_type") or "summary"
    if observer not in ("histogram", "summary"):
        raise MappingError(f"{where}: observer_type {observer!r} is not histogram or summary")
    rule.observer_type = observer
    hist = raw.get("histogram_options")
    summ = raw.get("summary_options")
    if observer == "histogram" and summ is not None:
        raise MappingError(f"{where}: cannot use histogram observer and summary options at the same time")
    if observer == "summary" and hist is not None:
        raise MappingError(f"{where}: cannot use summary observer and histogram options at the same time")
    d_hist = defaults.get("histogram_options") or {}
    d_summ = defaults.get("summary_options") or {}
    buckets = (hist or {}).get("buckets") or raw.get("buckets") or d_hist.get("buckets") or DEFAULT_BUCKETS
    rule.buckets = sorted(float(b) for b in buckets)
    quantiles = (summ or {}).get("quantiles") or raw.get("quantiles") or d_summ.get("quantiles")
    if quantiles:
        rule.quantiles = [(float(q["quantile"]), float(q.get("error", 0.0))) for q in quantiles]
    max_age = (summ or {}).get("max_age") or d_summ.get("max_age")
    if max_age:
        try:
            rule.max_age_s = parse_duration(max_age)
        except ValueError as exc:
            raise MappingError(f"{where}: summary_options.max_age: {exc}") from None


def _rule(index: int, raw: dict[str, Any], defaults: dict[str, Any]) -> Rule:
    where = f"mapping #{index + 1} ({raw.get('match')!r})"
    if not isinstance(raw, dict) or not raw.get("match"):
        raise MappingError(f"mapping #{index + 1} has no `match`")
    unknown = set(raw) - {
        "match", "name", "labels", "match_type", "action", "match_metric_type", "observer_type", "timer_type",
        "histogram_options", "summary_options", "buckets", "quantiles", "ttl", "help",
    }  # fmt: skip
    if unknown:
        raise MappingError(f"{where}: keys {sorted(unknown)} are not supported by the bridge")
    name = str(raw.get("name") or "")
    if not name:
        raise MappingError(f"{where}: metric mapping didn't set a metric name (drop rules need one too)")
    if not METRIC_NAME_RE.match(name):
        raise MappingError(f"{where}: metric name {name!r} is not a valid Prometheus name template")
    labels = {str(k): str(v) for k, v in (raw.get("labels") or {}).items()}
    for key in labels:
        if not LABEL_NAME_RE.match(key):
            raise MappingError(f"{where}: invalid label key {key!r}")
    match_type = raw.get("match_type") or defaults.get("match_type") or "glob"
    action = raw.get("action") or "map"
    if match_type not in ("glob", "regex"):
        raise MappingError(f"{where}: match_type {match_type!r} is not glob or regex")
    if action not in ("map", "drop"):
        raise MappingError(f"{where}: action {action!r} is not map or drop")
    match = str(raw["match"])
    if match_type == "glob":
        if not GLOB_LINE_RE.match(match):
            raise MappingError(f"{where}: invalid glob match (`*` must be a whole dot-separated component)")
        pattern = _glob_regex(match)
    else:
        try:
            pattern = re.compile(match)
        except re.error as exc:
            raise MappingError(f"{where}: invalid regex: {exc}") from None
    try:
        ttl_s = parse_duration(raw.get("ttl") or defaults.get("ttl") or 0)
    except ValueError as exc:
        raise MappingError(f"{where}: {exc}") from None
    rule = Rule(
        match=match, name=name, match_type=match_type, labels=labels, action=action,
        match_metric_type=_metric_type(raw.get("match_metric_type"), where), help=str(raw.get("help") or ""),
        ttl_s=ttl_s, index=index, pattern=pattern,
    )  # fmt: skip
    _observer_options(raw, defaults, rule, where)
    return rule


class Mapper:
    """Looks StatsD names up in a mapping file, the way statsd_exporter does."""

    def __init__(self, rules: list[Rule], default: Rule | None = None) -> None:
        self.rules = rules
        self.default = default or Rule(match="", name="")  # how unmapped samples are kept
        self._globs = [r for r in rules if r.match_type == "glob"]
        self._regexes = [r for r in rules if r.match_type == "regex"]
        self._cache: dict[tuple[str, str], Match | None] = {}

    @classmethod
    def from_yaml(cls, text: str) -> Mapper:
        try:
            doc = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise MappingError(f"not valid YAML: {exc}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("mappings", []), list):
            raise MappingError("expected a mapping with a `mappings:` list")
        defaults = doc.get("defaults") or {}
        try:
            default = Rule(match="", name="", ttl_s=parse_duration(defaults.get("ttl") or 0))
        except ValueError as exc:
            raise MappingError(f"defaults: {exc}") from None
        _observer_options({}, defaults, default, "defaults")
        return cls([_rule(i, raw, defaults) for i, raw in enumerate(doc.get("mappings") or [])], default)

    @classmethod
    def from_file(cls, path: str | Path) -> Mapper:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise MappingError(f"cannot read mapping file {path}: {exc.strerror}") from None
        return cls.from_yaml(text)

    def lookup(self, name: str, metric_type: MetricType) -> Match | None:
        key = (name, metric_type)
        if key not in self._cache:
            self._cache[key] = self._lookup(name, metric_type)
        return self._cache[key]

    def _lookup(self, name: str, metric_type: MetricType) -> Match | None:
        for rule in self._globs:
            if rule.match_metric_type not in (None, metric_type):
                continue
            m = rule.pattern.fullmatch(name)
            if m:
                groups = list(m.groups())
                labels = {k: expand(v, groups) for k, v in rule.labels.items()}
                return Match(rule, expand(rule.name, groups), labels)
        for rule in self._regexes:
            m = rule.pattern.search(name)
            if m and rule.match_metric_type in (None, metric_type):
                groups = [g or "" for g in m.groups()]
                named = {k: v or "" for k, v in m.groupdict().items()}
                labels = {k: expand(v, groups, named) for k, v in rule.labels.items()}
                return Match(rule, expand(rule.name, groups, named), labels)
        return None


def escape_metric_name(name: str) -> str:
    """What statsd_exporter calls an unmapped metric: invalid characters become `_`, no leading digit."""
    escaped = re.sub(r"[^a-zA-Z0-9_]", "_", name)
    return "_" + escaped if escaped[:1].isdigit() else escaped
