"""End to end: the local stack WITH its monitoring (StatsD bridge, Prometheus with the rules, Alertmanager,
node-exporter) runs helical_model_workflow on the sample; then the real Prometheus answers every query of
every dashboard panel, alert and recording rule and documented query, the core panels show the DAG, its
tasks and the model that ran, and every StatsD name Airflow and the runner sent is mapped or dropped."""

from __future__ import annotations

import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("airflow")
pytest.importorskip("psycopg")

from helical_airflow import settings  # noqa: E402
from helical_airflow.stack.client import AirflowClient  # noqa: E402
from helical_airflow.stack.config import StackConfig  # noqa: E402
from helical_airflow.stack.monitoring import CAPTURE_ENV, prometheus_url, statsd_metrics_url  # noqa: E402
from helical_airflow.statsd_bridge.check import classify, read_lines, summary  # noqa: E402
from helical_airflow.statsd_bridge.mapping import Mapper  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "monitoring"))
import check_queries as cq  # noqa: E402  (monitoring/check_queries.py: the query checker the docs describe)
from stack_helpers import local_stack, require_binaries, wait_for  # noqa: E402  (tests/stack_helpers.py)

pytestmark = [pytest.mark.slow, pytest.mark.stack]

REPO = Path(__file__).resolve().parents[2]
DAG = "helical_model_workflow"
CONF = {"input_path": "sample.h5ad", "model": "geneformer", "shard_size": 350, "device": "cpu"}


@pytest.fixture(scope="module")
def stack(
    sample_h5ad: Path, fixture_cache: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[StackConfig, AirflowClient, Path]]:
    require_binaries("redis-server", "prometheus", "prometheus-alertmanager", "prometheus-node-exporter",
                     hint="scripts/install_test_deps.sh, scripts/install_monitoring.sh")  # fmt: skip
    capture = tmp_path_factory.mktemp("statsd") / "capture.txt"  # kept by pytest after the run, for a look
    with pytest.MonkeyPatch.context() as env:
        env.setenv(CAPTURE_ENV, str(capture))  # the bridge records what it receives
        settings.reload()  # a plain MonkeyPatch: the package reads its settings once
        with local_stack(sample_h5ad, fixture_cache, prefix="helical-obs-e2e-", monitoring=True,
                         wait_for_dag=DAG) as running:  # fmt: skip
            yield running.cfg, running.client, capture


def test_dag_run_shows_on_every_core_panel(stack: tuple[StackConfig, AirflowClient, Path]) -> None:
    cfg, client, capture = stack
    started = time.time()
    run_id = client.trigger(DAG, CONF)
    run = client.wait_for_run(DAG, run_id, timeout_s=900)
    tis = client.task_instances(DAG, run_id)
    assert run["state"] == "success", [(t["task_id"], t["map_index"], t["state"]) for t in tis]

    prom = cq.Prometheus(prometheus_url(cfg), window_s=time.time() - started + 120)
    dag = f'{{dag_id="{DAG}"}}'
    # the stack scrapes and evaluates rules every 15 s
    wait_for(lambda: bool(prom.api("query", query=f"airflow:dagrun_finished:increase1h{dag}")["result"]), 120,
             "the DAG run in Prometheus and its recording rule", interval=2)  # fmt: skip
    wait_for(lambda: bool(prom.api("query", query="helical_embed_cells_total")["result"]), 60, "runner metrics",
             interval=2)  # fmt: skip

    queries = cq.all_queries()
    errors, empty, with_data = cq.check(prom, queries)
    print(f"\n{len(queries)} dashboard/rule/docs queries: {len(errors)} errors, {with_data} returned series")
    assert errors == [] and empty == []

    def panel(title: str) -> list[dict]:
        q = next(q for q in cq.dashboard_queries() if q.where.endswith(f": {title}"))
        return prom.run(q)

    assert max(float(v) for s in panel("Scheduler heartbeat") for _, v in s["values"]) > 0
    assert (DAG, "success") in {(s["metric"]["dag_id"], s["metric"]["state"]) for s in panel("DAG runs by outcome")}
    ran = {t["task_id"] for t in tis if t["state"] == "success"}
    timed = {s["metric"]["task_id"] for s in panel("Task duration p95") if s["metric"]["dag_id"] == DAG}
    assert ran <= timed, f"tasks without a duration: {ran - timed}"
    finished = {(s["metric"]["task_id"], s["metric"]["state"]) for s in panel("Task instances by final state")
                if s["metric"]["dag_id"] == DAG}  # fmt: skip
    assert {(task, "success") for task in ran} <= finished
    cells = panel("Cells/s per model")
    assert {s["metric"]["model"] for s in cells} == {CONF["model"]}
    assert all(float(s["values"][-1][1]) > 0 for s in cells)
    assert {s["metric"]["model"] for s in panel("Peak memory per model")} == {CONF["model"]}
    embedded = prom.api("query", query=f'sum(helical_embed_cells_total{{model="{CONF["model"]}"}})')["result"]
    assert float(embedded[0]["value"][1]) == 700  # every cell of the sample, once

    # every StatsD name of this run is mapped or dropped
    with urllib.request.urlopen(statsd_metrics_url(cfg), timeout=10) as resp:
        exposition = resp.read().decode()
    unmapped = [line for line in exposition.splitlines() if line.startswith("statsd_exporter_events_unmapped_total")]
    assert all(line.endswith(" 0") for line in unmapped), unmapped
    if capture.is_file():  # the bridge recorded the traffic (statsd_exporter cannot)
        outcomes = classify(Mapper.from_file(REPO / "monitoring" / "statsd" / "mapping.yml"), read_lines([capture]))
        print(f"StatsD names of this run: {len(outcomes)} distinct, {summary(outcomes.values())}")
        assert [o.name for o in outcomes.values() if o.action == "unmapped"] == []
