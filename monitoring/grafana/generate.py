"""Grafana dashboards as code (grafana-foundation-sdk): writes monitoring/grafana/dashboards/*.json.

    python monitoring/grafana/generate.py          # regenerate the committed JSON
    python monitoring/grafana/generate.py --check  # exit 1 if the committed JSON is stale

Every query names the provisioned Prometheus datasource by its fixed uid (`prometheus`, see
provisioning/datasources/datasources.yml), never an import-time `${DS_PROMETHEUS}` input, and no query
names a DAG, task or model: they come from the $dag, $task and $model variables.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import logs, loki, stat, table, timeseries
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import prometheus as prom_models
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableOption, VariableRefresh, VariableSort

OUT_DIR = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="prometheus")
LOKI = DataSourceRef(type_val="loki", uid="loki")  # provisioned with this fixed uid too
RATE = "$__rate_interval"
DAG = 'dag_id=~"$dag"'
TASK = 'dag_id=~"$dag",task_id=~"$task"'
MODEL = 'model=~"$model"'
WORKERS = 'name=~".*worker.*"'  # compose containers of the Celery worker service


def query(expr: str, legend: str = "", instant: bool = False) -> prom.Dataquery:
    q = prom.Dataquery().expr(expr).datasource(DATASOURCE).legend_format(legend or "__auto")
    return q.instant() if instant else q.range()


def _grid(panel, width: int, height: int):  # type: ignore[no-untyped-def]
    return panel.height(height).span(width).datasource(DATASOURCE)


def ts(title: str, description: str, queries: list[prom.Dataquery], unit: str = "short", width: int = 8):
    panel = timeseries.Panel().title(title).description(description).unit(unit).fill_opacity(10)
    panel = panel.legend(
        common_b.VizLegendOptions()
        .display_mode(common.LegendDisplayMode.LIST)
        .placement(common.LegendPlacement.BOTTOM)
        .show_legend(True)
    )
    for ref, q in zip("ABCDEFGH", queries, strict=False):
        panel = panel.with_target(q.ref_id(ref))
    return _grid(panel, width, 8)


def st(title: str, description: str, expr: str, unit: str = "short", width: int = 4, legend: str = ""):
    panel = stat.Panel().title(title).description(description).unit(unit)
    panel = panel.with_target(query(expr, legend, True).ref_id("A"))
    return _grid(panel.graph_mode(common.BigValueGraphMode.NONE), width, 8)


def tbl(title: str, description: str, expr: str, width: int = 12):
    panel = (
        table.Panel()
        .title(title)
        .description(description)
        .with_target(query(expr, instant=True).format(prom_models.PromQueryFormat.TABLE).ref_id("A"))
    )
    return _grid(panel, width, 8)


def variable(name: str, label: str, expr: str) -> dash.QueryVariable:
    return (
        dash.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(expr)
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(VariableOption(text="All", value="$__all"))
    )


def main_dashboard() -> dash.Dashboard:
    d = (
        dash.Dashboard("Helical - Airflow & Containers")
        .uid("helical-airflow")
        .tags(["helical", "airflow"])
        .description("Airflow scheduler, DAG runs and tasks, the helical-airflow runner, containers and host.")
        .refresh("30s")
        .time("now-3h", "now")
        .timezone("browser")
        .editable()
        .with_variable(variable("dag", "DAG", "label_values(airflow_ti_start_total, dag_id)"))
        .with_variable(variable("task", "Task", 'label_values(airflow_ti_start_total{dag_id=~"$dag"}, task_id)'))
        .with_variable(variable("model", "Model", "label_values(helical_embed_shards_total, model)"))
    )

    d = d.with_row(dash.Row("Airflow"))
    d = d.with_panel(
        ts(
            "Scheduler heartbeat",
            "Heartbeats per minute of the scheduler, DAG processor and triggerer. Flat at 0: the component is down.",
            [
                query(f"sum(rate(airflow_scheduler_heartbeat_total[{RATE}])) * 60", "scheduler"),
                query(f"sum(rate(airflow_dag_processor_heartbeat_total[{RATE}])) * 60", "dag-processor"),
                query(f"sum(rate(airflow_triggerer_heartbeat_total[{RATE}])) * 60", "triggerer"),
            ],
            "short",
        )
    )
    d = d.with_panel(
        ts(
            "DAG runs finished (last hour)",
            "Runs that finished in the hour before each point, by DAG and outcome (recording rule "
            "airflow:dagrun_finished:increase1h, which also counts a DAG's first run).",
            [query(f"sum by (dag_id, state) (airflow:dagrun_finished:increase1h{{{DAG}}})", "{{dag_id}} {{state}}")],
        )
    )
    d = d.with_panel(
        ts(
            "DAG run duration (mean)",
            "Mean duration of finished runs since statsd-exporter started, by DAG and outcome.",
            [
                query(
                    f"sum by (dag_id, state) (airflow_dagrun_duration_seconds_sum{{{DAG}}})"
                    f" / sum by (dag_id, state) (airflow_dagrun_duration_seconds_count{{{DAG}}})",
                    "{{dag_id}} {{state}}",
                )
            ],
            "s",
        )
    )
    d = d.with_panel(
        st(
            "DAG runs",
            "Finished DAG runs since statsd-exporter started.",
            f"sum(airflow_dagrun_duration_seconds_count{{{DAG}}}) or vector(0)",
        )
    )
    d = d.with_panel(
        st(
            "Succeeded",
            "Successful DAG runs since statsd-exporter started.",
            f'sum(airflow_dagrun_duration_seconds_count{{{DAG},state="success"}}) or vector(0)',
        )
    )
    d = d.with_panel(
        st(
            "Failed",
            "Failed DAG runs since statsd-exporter started.",
            f'sum(airflow_dagrun_duration_seconds_count{{{DAG},state="failed"}}) or vector(0)',
        )
    )
    d = d.with_panel(
        tbl(
            "DAG runs by outcome",
            "Finished runs per DAG and state since statsd-exporter started.",
            f"sum by (dag_id, state) (airflow_dagrun_duration_seconds_count{{{DAG}}})",
            12,
        )
    )

    d = d.with_row(dash.Row("Tasks"))
    d = d.with_panel(
        ts(
            "Task duration p95",
            "95th percentile of task run time, over all tries since statsd-exporter started (solid) and over "
            "the rate window (needs two tries in the window).",
            [
                query(
                    "histogram_quantile(0.95, sum by (le, dag_id, task_id) "
                    f"(airflow_task_duration_seconds_bucket{{{TASK}}}))",
                    "{{dag_id}}.{{task_id}}",
                ),
                query(
                    "histogram_quantile(0.95, sum by (le, dag_id, task_id) "
                    f"(rate(airflow_task_duration_seconds_bucket{{{TASK}}}[{RATE}])))",
                    "{{dag_id}}.{{task_id}} (window)",
                ),
            ],
            "s",
            12,
        )
    )
    d = d.with_panel(
        ts(
            "Task queue wait p95",
            "95th percentile of the time task instances waited in the queue for a worker.",
            [
                query(
                    "histogram_quantile(0.95, sum by (le, dag_id, task_id) "
                    f"(airflow_task_queued_duration_seconds_bucket{{{TASK}}}))",
                    "{{dag_id}}.{{task_id}}",
                )
            ],
            "s",
            12,
        )
    )
    d = d.with_panel(
        tbl(
            "Task instances by final state",
            "Finished task instances since statsd-exporter started.",
            f"sum by (dag_id, task_id, state) (airflow_ti_finish_total{{{TASK}}})",
            12,
        )
    )
    d = d.with_panel(
        ts(
            "Workers and slots",
            "Task instances queued for / running on a worker (by queue), and the executor's open slots. Queued "
            "staying above 0 means the workers are saturated.",
            [
                query("sum by (queue) (airflow_ti_queued)", "queued {{queue}}"),
                query("sum by (queue) (airflow_ti_running)", "running {{queue}}"),
                query("sum by (executor) (airflow_executor_open_slots)", "open slots {{executor}}"),
                query("sum by (pool) (airflow_pool_open_slots)", "pool {{pool}} open"),
            ],
            "short",
            12,
        )
    )

    d = d.with_row(dash.Row("Embedding runner (helical-airflow embed-shard)"))
    d = d.with_panel(
        ts(
            "Cells/s per model",
            "Throughput of the last finished shard (cells / shard seconds, model load excluded); sequence models "
            "count records here (and have their own panels below).",
            [query(f"max by (model, device) (helical_embed_cells_per_second{{{MODEL}}})", "{{model}} ({{device}})")],
            "short",
        )
    )
    d = d.with_panel(
        ts(
            "Peak memory per model",
            "Peak RSS of shard processes against the memory cap of the model's resource profile; peak GPU memory "
            "on GPU runs.",
            [
                query(f"max by (model) (helical_embed_peak_rss_bytes{{{MODEL}}})", "{{model}} peak RSS"),
                query(f"max by (model) (helical_embed_memory_cap_bytes{{{MODEL}}})", "{{model}} cap"),
                query(f"max by (model) (helical_embed_peak_gpu_bytes{{{MODEL}}})", "{{model}} peak GPU"),
            ],
            "bytes",
        )
    )
    d = d.with_panel(
        ts(
            "Cells embedded",
            "Cells embedded per second across all shards and workers, by model.",
            [query(f"sum by (model) (rate(helical_embed_cells_total{{{MODEL}}}[{RATE}]))", "{{model}}")],
            "short",
        )
    )
    d = d.with_panel(
        ts(
            "Sequences/s per model",
            "Sequence models (FASTA / table inputs): records embedded per second across all shards and workers, by "
            "model (rate of helical_embed_sequences_total).",
            [query(f"sum by (model) (rate(helical_embed_sequences_total{{{MODEL}}}[{RATE}]))", "{{model}}")],
            "short",
            12,
        )
    )
    d = d.with_panel(
        ts(
            "Nucleotides/s per model",
            'Sequence models: nucleotides embedded per second across all shards and workers, by model, and ("last '
            'shard") the throughput of the last finished shard (nucleotides / shard seconds, model load excluded). '
            "Records differ in length, so this is the throughput to compare across runs.",
            [
                query(f"sum by (model) (rate(helical_embed_nucleotides_total{{{MODEL}}}[{RATE}]))", "{{model}}"),
                query(
                    f"max by (model, device) (helical_embed_nucleotides_per_second{{{MODEL}}})",
                    "{{model}} ({{device}}) last shard",
                ),
            ],
            "short",
            12,
        )
    )
    d = d.with_panel(
        ts(
            "Shard and model-load time",
            "p95 shard time and mean model load time per model, since each run's first shard.",
            [
                query(
                    "histogram_quantile(0.95, sum by (le, model) "
                    f"(helical_embed_shard_duration_seconds_bucket{{{MODEL}}}))",
                    "{{model}} shard p95",
                ),
                query(
                    f"sum by (model) (helical_embed_model_load_duration_seconds_sum{{{MODEL}}})"
                    f" / sum by (model) (helical_embed_model_load_duration_seconds_count{{{MODEL}}})",
                    "{{model}} load",
                ),
            ],
            "s",
            12,
        )
    )
    d = d.with_panel(
        tbl(
            "Shard failures by error code",
            "E1xx input, E2xx configuration, E3xx runtime (E303: out of memory, E305: memory cap exceeded).",
            f"sum by (model, code) (helical_embed_failures_total{{{MODEL}}})",
            12,
        )
    )

    d = d.with_panel(
        tbl(
            "Quality gate scores of recent runs",
            "Per run: passed (1/0), mean pairwise cosine (collapsed above 0.999), and with a label column the "
            "kNN label-transfer accuracy and silhouette of the embeddings beside the PCA baseline of the same "
            "cells (pca_*). Kept 7 days.",
            f"max by (model, dataset, run_key, score) (last_over_time(helical_quality_score{{{MODEL}}}[7d]))",
            24,
        )
    )

    d = d.with_row(dash.Row("Fine-tuning (helical_finetune DAG, helical-airflow finetune)"))
    run = "model, dataset, label_key, finetune_key"
    d = d.with_panel(
        ts(
            "Fine-tuning: loss and validation accuracy",
            "After every epoch: the mean training loss, the loss and accuracy on the validation split, and the "
            "validation macro F1 early stopping watches (alert HelicalFineTuneNotImproving: 2+ epochs without a "
            "better one). One line per training (finetune_key).",
            [
                query(
                    f"max by ({run}) (helical_finetune_train_loss{{{MODEL}}})", "{{model}} {{finetune_key}} train loss"
                ),
                query(f"max by ({run}) (helical_finetune_val_loss{{{MODEL}}})", "{{model}} {{finetune_key}} val loss"),
                query(
                    f"max by ({run}) (helical_finetune_val_accuracy{{{MODEL}}})",
                    "{{model}} {{finetune_key}} val accuracy",
                ),
                query(
                    f"max by ({run}) (helical_finetune_val_macro_f1{{{MODEL}}})",
                    "{{model}} {{finetune_key}} val macro F1",
                ),
            ],
            "short",
            12,
        )
    )
    d = d.with_panel(
        ts(
            "Fine-tuning: epoch time and training cells/s",
            "Wall time of the last finished epoch (training plus validation) and training cells per second in "
            "its training pass. Failed trainings: alert HelicalFineTuneFailed.",
            [
                query(
                    f"max by ({run}) (helical_finetune_train_cells_per_second{{{MODEL}}})",
                    "{{model}} {{finetune_key}} cells/s",
                ),
                query(
                    f"max by ({run}) (helical_finetune_epoch_seconds{{{MODEL}}})",
                    "{{model}} {{finetune_key}} epoch seconds",
                ),
            ],
            "short",
            12,
        )
    )

    d = d.with_row(dash.Row("Model comparison (helical_model_comparison DAG, helical-airflow compare)"))
    d = d.with_panel(
        tbl(
            "Model comparison: scores per model",
            "Per comparison (comparison_key) and model (PCA: the baseline): the scIB aggregates (bio_conservation, "
            "batch_correction with a batch key, total) and rank (1: best), with every scib-metrics metric. Fixture "
            "weights carry no biology: the ranking only tests the job (comparison.html says so). Kept 7 days.",
            "max by (dataset, comparison_key, model, score) "
            f"(last_over_time(helical_compare_score{{{MODEL}}}[7d]))",
            24,
        )
    )

    d = d.with_row(dash.Row("Containers (cAdvisor, Docker stack)"))
    d = d.with_panel(
        ts(
            "Worker CPU",
            "CPU cores used by each Celery worker container.",
            [query(f"sum by (name) (rate(container_cpu_usage_seconds_total{{{WORKERS}}}[{RATE}]))", "{{name}}")],
            "short",
            12,
        )
    )
    d = d.with_panel(
        ts(
            "Worker memory",
            "Working set of each worker container against its limit (0: no limit).",
            [
                query(f"sum by (name) (container_memory_working_set_bytes{{{WORKERS}}})", "{{name}}"),
                query(f"sum by (name) (container_spec_memory_limit_bytes{{{WORKERS}}})", "{{name}} limit"),
            ],
            "bytes",
            12,
        )
    )
    d = d.with_panel(
        ts(
            "CPU per container",
            "CPU cores used by every container of the stack.",
            [query(f'sum by (name) (rate(container_cpu_usage_seconds_total{{name!=""}}[{RATE}]))', "{{name}}")],
            "short",
            12,
        )
    )
    d = d.with_panel(
        ts(
            "Memory per container",
            "Working-set memory of every container of the stack.",
            [query('sum by (name) (container_memory_working_set_bytes{name!=""})', "{{name}}")],
            "bytes",
            12,
        )
    )

    d = d.with_row(dash.Row("Host (node-exporter)"))
    d = d.with_panel(
        ts(
            "Host CPU busy",
            "Share of CPU time not idle.",
            [query(f'1 - avg by (instance) (rate(node_cpu_seconds_total{{mode="idle"}}[{RATE}]))', "{{instance}}")],
            "percentunit",
        )
    )
    d = d.with_panel(
        ts(
            "Host memory used",
            "Share of memory not available to new processes.",
            [query("1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes", "{{instance}}")],
            "percentunit",
        )
    )
    d = d.with_panel(
        ts(
            "Host load and disk",
            "1-minute load average, and free space on /.",
            [
                query("node_load1", "load1 {{instance}}"),
                query(
                    'node_filesystem_avail_bytes{mountpoint="/"} / node_filesystem_size_bytes{mountpoint="/"}',
                    "/ free {{instance}}",
                ),
            ],
            "short",
        )
    )

    d = d.with_row(dash.Row("Metrics pipeline"))
    d = d.with_panel(
        ts(
            "Scrape targets up",
            "1 when Prometheus scraped the target at its last attempt.",
            [query("up", "{{job}} {{instance}}")],
            "short",
        )
    )
    d = d.with_panel(
        ts(
            "StatsD samples",
            "StatsD samples per second by what the mapping did with them; unmapped ones are "
            "names monitoring/statsd/mapping.yml does not know yet.",
            [
                query(f"sum by (action) (rate(statsd_exporter_events_actions_total[{RATE}]))", "{{action}}"),
                query(f"sum(rate(statsd_exporter_events_unmapped_total[{RATE}]))", "unmapped"),
            ],
            "short",
        )
    )
    d = d.with_panel(
        _grid(
            logs.Panel()
            .title("Task and runner logs")
            .description(
                "Airflow task logs of the selected DAG and task, with the runner's JSON lines unpacked (Loki, shipped "
                "by Promtail: monitoring/promtail/promtail.yml). Labels: dag_id, task_id, level, model, run_key."
            )
            .datasource(LOKI)
            .with_target(
                loki.Dataquery().ref_id("A").datasource(LOKI).expr('{job="airflow", dag_id=~"$dag", task_id=~"$task"}')
            )
            .show_time(True)
            .enable_log_details(True)
            .wrap_log_message(True),
            24,
            10,
        ).datasource(LOKI)
    )
    d = d.with_panel(
        tbl(
            "Firing alerts",
            "Alerts firing now (monitoring/rules/).",
            'sum by (alertname, severity) (ALERTS{alertstate="firing"})',
            8,
        )
    )
    return d


DASHBOARDS = {"helical-airflow.json": main_dashboard}


def render(builder: dash.Dashboard) -> str:
    built = builder.build()
    for number, panel in enumerate(built.panels or [], start=1):  # stable ids: links and alerts refer to them
        panel.id_val = number
    return json.dumps(json.loads(JSONEncoder().encode(built)), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed dashboard differs")
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    stale = []
    for filename, build in DASHBOARDS.items():
        path, text = args.out / filename, render(build())
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"stale: {', '.join(stale)}; run: python monitoring/grafana/generate.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
