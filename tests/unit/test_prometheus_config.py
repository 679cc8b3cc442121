"""Prometheus, alert rules and Alertmanager configs: promtool / amtool checks, the rules' unit tests, the
local stack's derived config, and no query that names a metric nothing produces."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from helical_airflow.stack.config import StackConfig
from helical_airflow.stack.monitoring import local_prometheus_config, monitoring_services
from helical_airflow.statsd_bridge.mapping import Mapper

REPO = Path(__file__).resolve().parents[2]
MON = REPO / "monitoring"
RULE_FILES = sorted((MON / "rules").glob("*.rules.yml"))
RULE_TESTS = sorted((MON / "rules" / "tests").glob("*.test.yml"))
# Metrics from other exporters (cAdvisor, node-exporter, Prometheus itself, statsd_exporter's own).
EXTERNAL = re.compile(r"^(container_|node_|up$|ALERTS$|statsd_exporter_)")
HISTOGRAM_SUFFIX = re.compile(r"_(bucket|sum|count)$")


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed: run ./scripts/install_monitoring.sh (CI does)")
    return path


def run(*argv: str) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{' '.join(argv)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def rule_expressions() -> dict[str, str]:
    exprs = {}
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                exprs[rule.get("alert") or rule["record"]] = rule["expr"]
    return exprs


def metric_names(promql: str) -> set[str]:
    """Metric names a PromQL expression reads (not labels, strings, functions or recording rules)."""
    text = re.sub(r'"[^"]*"', '""', promql)  # label values and legend strings
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range selectors
    names = set(re.findall(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])(?!\s*\()", text))
    keywords = {"and", "or", "unless", "offset", "bool", "inf", "nan"}
    return {n for n in names - keywords if ":" not in n}  # name:with:colons = recording rules


def produced_metric(name: str, mapper: Mapper) -> bool:
    """True when the mapping (or an external exporter) produces this metric."""
    if EXTERNAL.match(name):
        return True
    for candidate in (name, HISTOGRAM_SUFFIX.sub("", name)):
        for rule in mapper.rules:
            pattern = re.sub(r"\\\$\\\{?\d+\\\}?", "[a-zA-Z0-9_]+", re.escape(rule.name))  # ${1} -> any word
            if rule.action == "map" and re.fullmatch(pattern, candidate):
                return True
    return False


def test_promtool_checks_the_config_and_every_rule_file() -> None:
    promtool = tool("promtool")
    out = run(promtool, "check", "config", str(MON / "prometheus.yml"))
    assert f"{len(RULE_FILES)} rule files found" in out
    run(promtool, "check", "rules", *map(str, RULE_FILES))


def test_promtool_rule_unit_tests_pass() -> None:
    """Every alert has a firing and a quiet case in monitoring/rules/tests/ (a broken rule fails here)."""
    promtool = tool("promtool")
    out = run(promtool, "test", "rules", *map(str, RULE_TESTS))
    assert out.count("SUCCESS") == len(RULE_TESTS)
    tested = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            tested |= {t["alertname"] for t in case.get("alert_rule_test", []) if t.get("exp_alerts")}
    alerts = {name for name in rule_expressions() if ":" not in name}
    assert alerts - tested == set(), "alerts without a test that makes them fire"


def test_amtool_checks_the_alertmanager_config() -> None:
    out = run(tool("amtool"), "check-config", str(MON / "alertmanager.yml"))
    assert "SUCCESS" in out


def test_required_alerts_exist_and_jobs_match_the_seed() -> None:
    alerts = rule_expressions()
    for needed in ("AirflowSchedulerHeartbeatMissing", "AirflowDagFailureRate", "AirflowTaskDurationP95High",
                   "AirflowWorkersSaturated", "HelicalEmbedThroughputDropped", "WorkerMemoryNearLimit",
                   "HelicalShardMemoryNearCap"):  # fmt: skip
        assert needed in alerts
    config = yaml.safe_load((MON / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert jobs["airflow"] == ["statsd-exporter:9102"]
    assert {"cadvisor", "node-exporter", "prometheus", "alertmanager"} <= set(jobs)


def test_rules_read_only_metrics_that_exist() -> None:
    mapper = Mapper.from_file(MON / "statsd" / "mapping.yml")
    unknown = {alert: sorted(n for n in metric_names(expr) if not produced_metric(n, mapper))
               for alert, expr in rule_expressions().items()}  # fmt: skip
    assert {k: v for k, v in unknown.items() if v} == {}


def test_metric_name_extraction_sees_names_not_labels() -> None:
    expr = 'sum by (dag_id) (rate(airflow_x_total{state="failed"}[5m])) / on(dag_id) helical_y offset 1h > 0.5'
    assert metric_names(expr) == {"airflow_x_total", "helical_y"}


def test_local_stack_prometheus_config_is_valid_and_points_at_local_ports(tmp_path: Path) -> None:
    promtool = tool("promtool")
    cfg = StackConfig.from_env(state_dir=tmp_path / "state")
    config = local_prometheus_config(cfg)
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    out = run(promtool, "check", "config", str(path))
    assert f"{len(RULE_FILES)} rule files found" in out
    targets = {job["job_name"]: job["static_configs"][0]["targets"][0] for job in config["scrape_configs"]}
    assert "cadvisor" not in targets  # needs Docker
    services = {s.name: s for s in monitoring_services(cfg)}
    assert targets["airflow"] == f"{cfg.host}:{services['statsd-exporter'].port}"
    assert targets["prometheus"] == f"{cfg.host}:{services['prometheus'].port}"
    assert services["statsd-exporter"].udp_port == cfg.ports["statsd"]  # where Airflow and the runner send
    assert any("mapping.yml" in arg for arg in services["statsd-exporter"].argv)
