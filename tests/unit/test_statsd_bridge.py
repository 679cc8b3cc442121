"""The StatsD bridge against statsd_exporter's documented semantics (README "Metric Mapping and
Configuration", pkg/mapper, pkg/line): matching, templates, drop, types, observers, ttl, exposition."""

from __future__ import annotations

import socket
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from helical_airflow.statsd_bridge import Mapper, MappingError, Registry, parse_line
from helical_airflow.statsd_bridge.server import UDPListener, make_http_server


def mapper(yaml_text: str) -> Mapper:
    return Mapper.from_yaml(yaml_text)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def feed(registry: Registry, *lines: str) -> None:
    for line in lines:
        events, errors = parse_line(line)
        for reason in errors:
            registry.count_error(reason)
        for event in events:
            registry.handle(event)


def samples(registry: Registry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parse the exposition with prometheus_client's parser: proves the text format too."""
    out = {}
    for family in text_string_to_metric_families(registry.render()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


# ---------------------------------------------------------------- matching


def test_glob_star_is_one_whole_component_and_captures_it() -> None:
    m = mapper("mappings:\n- match: test.dispatcher.*.*.*\n  name: events_total\n"
               "  labels: {processor: $1, action: $2, outcome: $3, job: test_dispatcher}")  # fmt: skip
    hit = m.lookup("test.dispatcher.FooProcessor.send.success", "counter")
    assert hit is not None and hit.name == "events_total"
    assert hit.labels == {"processor": "FooProcessor", "action": "send", "outcome": "success", "job": "test_dispatcher"}
    assert m.lookup("test.dispatcher.Foo.send.success.extra", "counter") is None  # * never spans a dot
    assert m.lookup("test.dispatcher.Foo.send", "counter") is None


def test_first_matching_glob_rule_wins_in_file_order() -> None:
    m = mapper(
        "mappings:\n- match: a.*.c\n  name: first\n- match: a.b.c\n  name: second\n- match: a.b.*\n  name: third"
    )
    assert m.lookup("a.b.c", "counter").name == "first"  # type: ignore[union-attr]
    assert m.lookup("a.b.d", "counter").name == "third"  # type: ignore[union-attr]


def test_regex_rules_run_only_when_no_glob_matched_and_search_unanchored() -> None:
    m = mapper(
        "mappings:\n- match: 'x\\.(\\w+)'\n  match_type: regex\n  name: from_regex_${1}\n"
        "- match: pre.x.*\n  name: from_glob\n"
    )
    assert m.lookup("pre.x.y", "counter").name == "from_glob"  # type: ignore[union-attr]  # glob first
    hit = m.lookup("other.x.abc.more", "counter")  # unanchored search, like Go's FindStringSubmatchIndex
    assert hit is not None and hit.name == "from_regex_abc"


def test_name_templates_need_braces_before_text() -> None:
    m = mapper("mappings:\n- match: app.*.*\n  name: ${1}_total\n  labels: {bad: $2_x, good: '${2}_x', far: $9}")
    hit = m.lookup("app.requests.api", "counter")
    assert hit is not None and hit.name == "requests_total"
    assert hit.labels == {"bad": "", "good": "api_x", "far": ""}  # $2_x is the group named "2_x": empty


def test_match_metric_type_limits_a_rule_to_one_statsd_type() -> None:
    m = mapper("mappings:\n- match: s.*\n  match_metric_type: gauge\n  name: s_${1}\n"
               "- match: s.*\n  match_metric_type: counter\n  name: s_${1}_total\n"
               "- match: s.*\n  match_metric_type: timer\n  name: s_${1}_seconds")  # fmt: skip
    assert m.lookup("s.x", "gauge").name == "s_x"  # type: ignore[union-attr]
    assert m.lookup("s.x", "counter").name == "s_x_total"  # type: ignore[union-attr]
    assert m.lookup("s.x", "observer").name == "s_x_seconds"  # type: ignore[union-attr]


def test_drop_action_discards_and_unmapped_names_are_escaped_without_labels() -> None:
    registry = Registry(mapper("mappings:\n- match: noise.*\n  action: drop\n  name: dropped"))
    feed(registry, "noise.x:1|c", "test.web-server.foo.bar:2|c", "9lives.x:1|g")
    got = samples(registry)
    assert ("test_web_server_foo_bar_total", ()) in got  # counters are exposed with _total
    assert ("_9lives_x", ()) in got  # no leading digit
    assert not any(name.startswith("noise") for name, _ in got)
    assert got[("statsd_exporter_events_actions_total", (("action", "drop"),))] == 1
    assert got[("statsd_exporter_events_unmapped_total", ())] == 2


@pytest.mark.parametrize(
    "text",
    [
        "mappings:\n- match: a.b*\n  name: x",  # * inside a component
        "mappings:\n- match: a.b\n",  # no name (drop rules need one too)
        "mappings:\n- match: a.b\n  name: 1x",  # not a metric name
        "mappings:\n- match: a.b\n  name: x\n  labels: {a: v}",  # label names need 2+ characters
        "mappings:\n- match: a.b\n  name: x\n  observer_type: histogram\n  summary_options: {quantiles: []}",
        "mappings:\n- match: '('\n  match_type: regex\n  name: x",
        "mappings:\n- match: a.b\n  name: x\n  ttl: 5 minutes",
        "mappings:\n- match: a.b\n  name: x\n  honor_labels: true",  # exists upstream, not in the bridge
    ],
)
def test_invalid_mappings_are_refused_with_a_code(text: str) -> None:
    with pytest.raises(MappingError) as err:
        mapper(text)
    assert err.value.code == "E601" and "mapping" in err.value.message


# ---------------------------------------------------------------- types and values


def test_counters_add_and_scale_by_sample_rate_and_refuse_negative_values() -> None:
    registry = Registry(mapper("mappings: []"))
    feed(registry, "c:3|c", "c:1|c|@0.1", "c:-5|c")
    got = samples(registry)
    assert got[("c_total", ())] == pytest.approx(13)
    assert got[("statsd_exporter_events_error_total", (("reason", "illegal_negative_counter"),))] == 1


def test_gauges_set_or_move_by_signed_deltas() -> None:
    registry = Registry(mapper("mappings: []"))
    feed(registry, "g:10|g", "g:+5|g", "g:-3|g|@0.5", "h:7|g", "h:2|g")
    got = samples(registry)
    assert got[("g", ())] == 12  # the sample rate does not scale gauges
    assert got[("h", ())] == 2


def test_several_samples_on_one_line_and_tags() -> None:
    registry = Registry(mapper("mappings:\n- match: t.*\n  name: t_${1}_total\n  labels: {from_rule: r1}"))
    feed(registry, "t.x:1|c:2|c", "t.y:1|c|#env:prod,zone:a", "t.z,env=dev:4|c")
    got = samples(registry)
    assert got[("t_x_total", (("from_rule", "r1"),))] == 3
    assert got[("t_y_total", (("env", "prod"), ("from_rule", "r1"), ("zone", "a")))] == 1
    assert got[("t_z_total", (("env", "dev"), ("from_rule", "r1")))] == 4


def test_malformed_samples_are_counted_not_applied() -> None:
    registry = Registry(mapper("mappings: []"))
    feed(registry, "nocolon", "x:abc|c", "x:1|s", "x:1|c|foo")
    got = samples(registry)
    errors = {dict(labels)["reason"]: v for (name, labels), v in got.items() if name.endswith("sample_errors_total")}
    assert errors == {"malformed_line": 1, "malformed_value": 1, "illegal_event": 1, "invalid_sample_factor": 1}
    assert not any(name.startswith("x") for name, _ in got)


def test_timers_become_histograms_in_seconds_with_cumulative_buckets() -> None:
    registry = Registry(mapper(
        "defaults:\n  observer_type: histogram\n  histogram_options: {buckets: [1, 10]}\n"
        "mappings:\n- match: job.*.duration\n  name: job_duration_seconds\n  labels: {job: $1}"
    ))  # fmt: skip
    feed(registry, "job.a.duration:500|ms", "job.a.duration:5000|ms", "job.a.duration:60000|ms",
         "job.a.duration:2|h")  # fmt: skip  # `h` values are not milliseconds
    got = samples(registry)
    bucket = {dict(lab)["le"]: v for (name, lab), v in got.items() if name == "job_duration_seconds_bucket"}
    assert bucket == {"1": 1, "10": 3, "+Inf": 4}  # client_golang writes le="1", not "1.0"
    assert got[("job_duration_seconds_count", (("job", "a"),))] == 4
    assert got[("job_duration_seconds_sum", (("job", "a"),))] == pytest.approx(0.5 + 5 + 60 + 2)


def test_timer_sample_rate_repeats_the_observation() -> None:
    registry = Registry(mapper("defaults:\n  observer_type: histogram\nmappings: []"))
    feed(registry, "t:100|ms|@0.25")
    assert samples(registry)[("t_count", ())] == 4


def test_summaries_report_quantiles_over_max_age() -> None:
    clock = Clock()
    registry = Registry(mapper(
        "mappings:\n- match: q\n  name: q_seconds\n  observer_type: summary\n"
        "  summary_options: {quantiles: [{quantile: 0.5, error: 0.05}, {quantile: 0.9, error: 0.01}], max_age: 30s}"
    ), clock)  # fmt: skip
    feed(registry, *[f"q:{v}|ms" for v in range(1000, 11000, 1000)])  # 1..10 s
    got = samples(registry)
    assert got[("q_seconds", (("quantile", "0.5"),))] == 5
    assert got[("q_seconds", (("quantile", "0.9"),))] == 9
    assert got[("q_seconds_count", ())] == 10
    clock.now += 31  # older than max_age: quantiles empty, totals kept
    got = samples(registry)
    assert got[("q_seconds_count", ())] == 10
    assert got[("q_seconds", (("quantile", "0.5"),))] != got[("q_seconds", (("quantile", "0.5"),))]  # NaN


def test_ttl_expires_series_not_updated_in_time() -> None:
    clock = Clock()
    registry = Registry(mapper("mappings:\n- match: r.*\n  name: r\n  ttl: 1m\n  labels: {run: $1}"), clock)
    feed(registry, "r.a:1|g", "r.b:1|g")
    clock.now += 45
    feed(registry, "r.b:2|g")
    clock.now += 30  # a: 75 s old, b: 30 s old
    got = samples(registry)
    assert ("r", (("run", "b"),)) in got and ("r", (("run", "a"),)) not in got


def test_a_name_keeps_its_type_and_label_names() -> None:
    registry = Registry(mapper("mappings:\n- match: k.*\n  name: k\n  labels: {kk: $1}\n- match: k\n  name: k"))
    feed(registry, "k.a:1|g", "k:1|g", "k.b:1|c")
    got = samples(registry)
    assert got[("k", (("kk", "a"),))] == 1
    conflicts = sum(v for (name, _), v in got.items() if name == "statsd_exporter_events_conflict_total")
    assert conflicts == 2


# ---------------------------------------------------------------- the process: UDP in, HTTP out


def test_bridge_serves_udp_traffic_as_metrics_over_http() -> None:
    registry = Registry(mapper("mappings:\n- match: app.*.hits\n  name: app_hits_total\n  labels: {page: $1}"))
    udp = UDPListener(registry, ("127.0.0.1", 0))
    http = make_http_server(registry, ("127.0.0.1", 0))
    import threading

    threading.Thread(target=http.serve_forever, daemon=True).start()
    udp.start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"app.home.hits:2|c\napp.home.hits:3|c\n", ("127.0.0.1", udp.port))
        url = f"http://127.0.0.1:{http.server_address[1]}/metrics"
        deadline = time.monotonic() + 5
        while True:
            with urllib.request.urlopen(url) as resp:
                body = resp.read().decode()
                assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            if 'app_hits_total{page="home"} 5' in body or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert 'app_hits_total{page="home"} 5' in body
        assert "statsd_exporter_lines_total 2" in body
    finally:
        http.shutdown()
        http.server_close()
        udp.close()
