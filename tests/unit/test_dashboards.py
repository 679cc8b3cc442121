"""Grafana dashboards as code: the committed JSON is what the generator writes, it provisions cleanly
(fixed datasource uid, no import inputs), hard-codes no DAG/task/model and reads only real metrics."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_prometheus_config import metric_names, produced_metric  # same folder: pytest puts it on sys.path

from helical_airflow.statsd_bridge.mapping import Mapper

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "monitoring" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def targets(dashboard: dict) -> list[tuple[str, dict]]:
    """The Prometheus queries (the logs panel's LogQL is checked on its own)."""
    return [(p["title"], t) for p in dashboard["panels"] for t in p.get("targets", [])
            if t.get("datasource", {}).get("type") != "loki"]  # fmt: skip


def test_committed_dashboards_are_not_stale(tmp_path: Path) -> None:
    pytest.importorskip("grafana_foundation_sdk", reason="pip install -e '.[dev]' (grafana-foundation-sdk)")
    generator = GRAFANA / "generate.py"
    result = subprocess.run([sys.executable, str(generator), "--check"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    # and --check can fail: a changed file is reported
    copy = tmp_path / "dashboards"
    subprocess.run([sys.executable, str(generator), "--out", str(copy)], check=True, capture_output=True, timeout=120)
    (copy / DASHBOARDS[0].name).write_text(DASHBOARDS[0].read_text().replace("Scheduler heartbeat", "Edited"))
    stale = subprocess.run([sys.executable, str(generator), "--check", "--out", str(copy)], capture_output=True,
                           text=True, timeout=120)  # fmt: skip
    assert stale.returncode == 1 and "stale" in stale.stderr


def test_main_dashboard_title_and_variables() -> None:
    titles = {load(p)["title"]: load(p) for p in DASHBOARDS}
    main = titles["Helical - Airflow & Containers"]
    variables = {v["name"]: v for v in main["templating"]["list"]}
    assert {"dag", "task", "model"} <= set(variables)
    for var in variables.values():
        assert var["datasource"]["uid"] == "prometheus" and var["includeAll"] and var["allValue"] == ".*"


def test_every_query_uses_the_provisioned_datasource_uid() -> None:
    provisioned = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "datasources.yml").read_text())
    uids = {ds["type"]: ds["uid"] for ds in provisioned["datasources"]}
    for path in DASHBOARDS:
        text = path.read_text()
        assert "${DS_" not in text and "__inputs" not in text, f"{path.name} needs an import-time datasource input"
        dashboard = load(path)
        for panel in dashboard["panels"]:
            if panel["type"] == "logs":
                assert panel["datasource"] == {"type": "loki", "uid": uids["loki"]}, panel["title"]
            elif panel["type"] != "row":
                assert panel["datasource"] == {"type": "prometheus", "uid": uids["prometheus"]}, panel["title"]
        for title, target in targets(dashboard):
            assert target["datasource"]["uid"] == uids["prometheus"], title


def test_panels_have_unique_ids_and_targets_unique_ref_ids() -> None:
    for path in DASHBOARDS:
        dashboard = load(path)
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids))
        for panel in dashboard["panels"]:
            refs = [t["refId"] for t in panel.get("targets", [])]
            assert all(refs) and len(refs) == len(set(refs)), panel["title"]


def test_no_query_hard_codes_a_dag_task_or_model() -> None:
    for path in DASHBOARDS:
        for title, target in targets(load(path)):
            for label, variable in (("dag_id", "$dag"), ("task_id", "$task"), ("model", "$model")):
                for m in re.finditer(rf'\b{label}\s*(=~|=|!=|!~)\s*"([^"]*)"', target["expr"]):
                    assert m.group(2) == variable, f"{title}: {m.group(0)} (use the ${label} variable)"


def test_panels_cover_the_issue() -> None:
    exprs = " ".join(t["expr"] for p in DASHBOARDS for _, t in targets(load(p)))
    for metric in ("airflow_scheduler_heartbeat_total", "airflow_dagrun_duration_seconds_count",
                   "airflow_task_duration_seconds_bucket", "helical_embed_cells_per_second",
                   "helical_embed_peak_rss_bytes", "container_cpu_usage_seconds_total",
                   "container_memory_working_set_bytes", "node_cpu_seconds_total"):  # fmt: skip
        assert metric in exprs


def test_queries_read_only_metrics_that_exist() -> None:
    mapper = Mapper.from_file(REPO / "monitoring" / "statsd" / "mapping.yml")
    for path in DASHBOARDS:
        dashboard = load(path)
        queries = [(t, x["expr"]) for t, x in targets(dashboard)]
        queries += [(v["name"], v["query"]) for v in dashboard["templating"]["list"]]
        for title, expr in queries:
            expr = re.sub(r"label_values\((.*),\s*\w+\)", r"\1", expr)  # the selector inside label_values()
            unknown = sorted(n for n in metric_names(expr) if not produced_metric(n, mapper))
            assert unknown == [], f"{path.name} / {title}: {unknown}"


def test_the_logs_panel_reads_loki_by_the_labels_promtail_sets() -> None:
    promtail = yaml.safe_load((GRAFANA.parent / "promtail" / "promtail.yml").read_text())
    labels = set()
    for job in promtail["scrape_configs"]:
        for static in job.get("static_configs", []):
            labels |= set(static.get("labels", {}))
        for stage in job.get("pipeline_stages", []):
            labels |= set((stage.get("labels") or {}) if isinstance(stage.get("labels"), dict) else [])
    panels = [p for path in DASHBOARDS for p in load(path)["panels"] if p["type"] == "logs"]
    assert panels, "no logs panel"
    for panel in panels:
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "loki", "uid": "loki"}
            used = set(re.findall(r"(\w+)\s*=~?", target["expr"].split("}")[0]))
            assert used and used <= labels, f"{panel['title']}: {used - labels} are not labels Promtail sets"
