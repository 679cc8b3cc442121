"""Grafana dashboards as code: the committed JSON is what the generator writes, it provisions cleanly
(fixed datasource uid, no import inputs), hard-codes no DAG/task/model and reads only real metrics."""

from __future__ import annotations

import json
import re
import shutil
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
sys.path.insert(0, str(REPO / "monitoring"))
import check_queries as cq  # noqa: E402  (monitoring/check_queries.py: every panel's and variable's query)

#: sequence models' panels and the runner metrics each must read
SEQUENCE_PANELS = {
    "Sequences/s per model": {"helical_embed_sequences_total"},
    "Nucleotides/s per model": {"helical_embed_nucleotides_total", "helical_embed_nucleotides_per_second"},
}


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


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed: run ./scripts/install_monitoring.sh (CI does)")
    return path


def test_every_panel_and_variable_query_parses_with_promtool(tmp_path: Path) -> None:
    """Each query (Grafana's variables substituted as check_queries.py does) as a recording rule: `promtool check
    rules` parses every expression with Prometheus' own parser, without a server."""
    promtool = _promtool()
    queries = cq.dashboard_queries()
    assert len(queries) > 30
    rules = [{"record": f"panel:query_{i}", "expr": q.expr} for i, q in enumerate(queries)]
    good = tmp_path / "panels.rules.yml"
    good.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    done = subprocess.run([promtool, "check", "rules", str(good)], capture_output=True, text=True, timeout=60)
    bad = [f"{q.where}: {q.expr}" for q in queries if q.expr in done.stdout + done.stderr]
    assert done.returncode == 0 and f"{len(rules)} rules found" in done.stdout, (done.stdout + done.stderr, bad)
    # and the check can fail: one broken query is reported
    rules.append({"record": "panel:broken", "expr": "sum by (model (helical_embed_sequences_total)"})
    broken = tmp_path / "broken.rules.yml"
    broken.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    assert subprocess.run([promtool, "check", "rules", str(broken)], capture_output=True, timeout=60).returncode != 0


def _panel(title: str) -> dict:
    for path in DASHBOARDS:
        for panel in load(path)["panels"]:
            if panel["title"] == title:
                return panel
    raise AssertionError(f"no panel titled {title!r} (monitoring/grafana/generate.py)")


def test_sequence_panels_exist_and_read_the_sequence_metrics() -> None:
    for title, metrics in SEQUENCE_PANELS.items():
        panel = _panel(title)
        assert panel["type"] == "timeseries" and panel["fieldConfig"]["defaults"]["unit"] == "short", title
        exprs = [t["expr"] for t in panel["targets"]]
        read = set().union(*(metric_names(e) for e in exprs))
        assert metrics <= read, f"{title}: reads {read}"
        assert all('model=~"$model"' in e and "by (model" in e for e in exprs), f"{title}: per model, $model: {exprs}"


def test_sequence_panels_evaluate_to_per_model_rates_on_recorded_series(tmp_path: Path) -> None:
    """The panels' own queries, evaluated by `promtool test rules` over series shaped as the StatsD mapping
    writes them (two runs of one model, one of another): records/s and nucleotides/s summed per model, and the
    last shard's nucleotides/s; the $model variable narrows them to one model."""
    promtool = _promtool()
    every = {"$__rate_interval": "5m", "$model": ".*"}
    one = {"$__rate_interval": "5m", "$model": "hyena_dna"}

    def exprs(title: str, variables: dict[str, str]) -> list[str]:
        return [cq.substitute(t["expr"], variables) for t in _panel(title)["targets"]]

    def series(metric: str, model: str, run_key: str, values: str) -> dict[str, str]:
        labels = f'model="{model}",device="cpu",dataset="sample_dna_fa",run_key="{run_key}"'
        return {"series": f"{metric}{{{labels}}}", "values": values}

    # per minute: 120 records and 6000 nucleotides for each hyena_dna run, 60 records and 6000 for caduceus
    inputs = [
        series("helical_embed_sequences_total", "hyena_dna", "r1", "0+120x10"),
        series("helical_embed_sequences_total", "hyena_dna", "r2", "0+120x10"),
        series("helical_embed_sequences_total", "caduceus", "r3", "0+60x10"),
        series("helical_embed_nucleotides_total", "hyena_dna", "r1", "0+6000x10"),
        series("helical_embed_nucleotides_total", "hyena_dna", "r2", "0+6000x10"),
        series("helical_embed_nucleotides_total", "caduceus", "r3", "0+6000x10"),
        series("helical_embed_nucleotides_per_second", "hyena_dna", "r1", "900x10"),
        series("helical_embed_nucleotides_per_second", "hyena_dna", "r2", "1200x10"),
        series("helical_embed_nucleotides_per_second", "caduceus", "r3", "100x10"),
    ]
    (sequences,) = exprs("Sequences/s per model", every)
    nt_rate, nt_last = exprs("Nucleotides/s per model", every)
    (sequences_one,) = exprs("Sequences/s per model", one)
    tests = [
        {"expr": sequences, "eval_time": "10m",
         "exp_samples": [{"labels": '{model="hyena_dna"}', "value": 4}, {"labels": '{model="caduceus"}', "value": 1}]},
        {"expr": nt_rate, "eval_time": "10m",
         "exp_samples": [{"labels": '{model="hyena_dna"}', "value": 200},
                         {"labels": '{model="caduceus"}', "value": 100}]},
        {"expr": nt_last, "eval_time": "10m",
         "exp_samples": [{"labels": '{model="hyena_dna",device="cpu"}', "value": 1200},
                         {"labels": '{model="caduceus",device="cpu"}', "value": 100}]},
        {"expr": sequences_one, "eval_time": "10m", "exp_samples": [{"labels": '{model="hyena_dna"}', "value": 4}]},
    ]  # fmt: skip
    spec = {"rule_files": [], "evaluation_interval": "1m",
            "tests": [{"interval": "1m", "input_series": inputs, "promql_expr_test": tests}]}  # fmt: skip
    path = tmp_path / "sequence_panels.test.yml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    done = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "SUCCESS" in done.stdout, done.stdout + done.stderr
    # and it can fail: a wrong expectation is reported
    tests[0]["exp_samples"][0]["value"] = 5
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    assert subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, timeout=60).returncode == 1


def test_finetune_panels_show_each_trainings_epoch_metrics_on_recorded_series(tmp_path: Path) -> None:
    """The fine-tuning panels' own queries, evaluated by `promtool test rules` over gauges shaped as the StatsD
    mapping writes them (telemetry.epoch_lines): one line per training, narrowed by $model."""
    promtool = _promtool()
    every = {"$__rate_interval": "5m", "$model": ".*"}
    one = {"$__rate_interval": "5m", "$model": "geneformer"}
    curves, speed = "Fine-tuning: loss and validation accuracy", "Fine-tuning: epoch time and training cells/s"

    def exprs(title: str, variables: dict[str, str]) -> list[str]:
        return [cq.substitute(t["expr"], variables) for t in _panel(title)["targets"]]

    def series(metric: str, model: str, key: str, values: str) -> dict[str, str]:
        labels = f'model="{model}",dataset="sample",label_key="cell_type",finetune_key="{key}"'
        return {"series": f"helical_finetune_{metric}{{{labels}}}", "values": values}

    inputs = [
        series("train_loss", "geneformer", "k1", "1.5 1.2 0.9"),
        series("val_accuracy", "geneformer", "k1", "0.3 0.5 0.6"),
        series("val_accuracy", "scgpt", "k2", "0.2 0.25"),
        series("train_cells_per_second", "geneformer", "k1", "40 42 41"),
        series("epoch_seconds", "geneformer", "k1", "3 3 3"),
    ]
    train_loss, _, accuracy, _ = exprs(curves, every)
    cells, _ = exprs(speed, every)
    (_, _, accuracy_one, _) = exprs(curves, one)
    run = 'dataset="sample",label_key="cell_type"'
    tests = [
        {"expr": train_loss, "eval_time": "2m",
         "exp_samples": [{"labels": f'{{model="geneformer",{run},finetune_key="k1"}}', "value": 0.9}]},
        {"expr": accuracy, "eval_time": "1m",
         "exp_samples": [{"labels": f'{{model="geneformer",{run},finetune_key="k1"}}', "value": 0.5},
                         {"labels": f'{{model="scgpt",{run},finetune_key="k2"}}', "value": 0.25}]},
        {"expr": accuracy_one, "eval_time": "1m",
         "exp_samples": [{"labels": f'{{model="geneformer",{run},finetune_key="k1"}}', "value": 0.5}]},
        {"expr": cells, "eval_time": "2m",
         "exp_samples": [{"labels": f'{{model="geneformer",{run},finetune_key="k1"}}', "value": 41}]},
    ]  # fmt: skip
    spec = {"rule_files": [], "evaluation_interval": "1m",
            "tests": [{"interval": "1m", "input_series": inputs, "promql_expr_test": tests}]}  # fmt: skip
    path = tmp_path / "finetune_panels.test.yml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    done = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "SUCCESS" in done.stdout, done.stdout + done.stderr
    tests[0]["exp_samples"][0]["value"] = 1.5  # and it can fail: the first epoch's loss is not the last one's
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    assert subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, timeout=60).returncode == 1
