"""The metrics pipeline for real: StatsD bridge (or statsd_exporter) + a real Prometheus with the project's
rules, fed with Airflow's captured StatsD traffic and a live `helical-airflow embed-shard` run (one good
shard, one that fails). Then every query of every dashboard panel, every alert/recording rule and every
PromQL block of docs/observability.md is asked of Prometheus: each must parse, and the core panels must
return series with the labels of what actually ran."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from helical_airflow.stack.config import StackConfig
from helical_airflow.stack.monitoring import local_prometheus_config, statsd_argv

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "monitoring"))
import check_queries as cq  # noqa: E402  (monitoring/check_queries.py: the query checker the docs describe)
from stack_helpers import free_ports, wait_for  # noqa: E402  (tests/stack_helpers.py)

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
CAPTURE = REPO / "tests" / "data" / "airflow_statsd_capture.txt"
# What Grafana would put in with a 1 s scrape interval; $dag/$task/$model as "All".
VARIABLES = {"$__rate_interval": "5s", "$__interval": "1s", "$__range": "5m", "$dag": ".*", "$task": ".*",
             "$model": ".*"}  # fmt: skip


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (local test URL)
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


@dataclass
class Pipeline:
    prometheus: str
    statsd_port: int
    metrics_url: str
    started: float

    def api(self, path: str, **params: object) -> dict:
        status, body = http_get(f"{self.prometheus}/api/v1/{path}?{urllib.parse.urlencode(params)}")
        data = json.loads(body or b"{}")
        assert status == 200 and data.get("status") == "success", f"{path} {params}: HTTP {status} {data}"
        return data["data"]

    def instant(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def range(self, expr: str) -> list[dict]:
        return self.api("query_range", query=expr, start=self.started, end=time.time(), step=1)["result"]


def start(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.skip("prometheus is not installed: run ./scripts/install_monitoring.sh (CI does)")
    tmp = tmp_path_factory.mktemp("observability")
    udp, http, prom, node = free_ports(4)
    cfg = StackConfig.from_env(state_dir=tmp / "state", python=sys.executable)
    cfg.ports.update({"statsd": udp, "statsd_http": http, "prometheus": prom, "node_exporter": node})
    config = local_prometheus_config(cfg)  # the local stack's own config, only faster
    config["global"].update({"scrape_interval": "1s", "evaluation_interval": "1s"})
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    procs = [
        start(statsd_argv(cfg), tmp / "bridge.log"),
        start([prometheus, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'tsdb'}",
               f"--web.listen-address=127.0.0.1:{prom}"], tmp / "prometheus.log"),
    ]  # fmt: skip
    node_exporter = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
    if node_exporter:  # host panels get data too (the local stack runs it)
        procs.append(start([node_exporter, f"--web.listen-address=127.0.0.1:{node}"], tmp / "node.log"))
    p = Pipeline(f"http://127.0.0.1:{prom}", udp, f"http://127.0.0.1:{http}/metrics", time.time())
    try:
        wait_for(lambda: http_get(f"{p.prometheus}/-/ready")[0] == 200, 60, "Prometheus to be ready")
        wait_for(lambda: bool(p.instant('up{job="airflow"} == 1')), 60, "Prometheus to scrape the bridge")
        yield p
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
        print("\n--- bridge log ---\n" + (tmp / "bridge.log").read_text()[-2000:])


def replay_capture(port: int, chunks: int = 10, pause_s: float = 1.0) -> list[str]:
    """Airflow's captured lines in their order, spread over ~10 s so counters rise across scrapes."""
    lines = [line for line in CAPTURE.read_text().splitlines() if line and not line.startswith("#")]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        size = math.ceil(len(lines) / chunks)
        for start in range(0, len(lines), size):
            for line in lines[start : start + size]:
                sock.sendto(line.encode(), ("127.0.0.1", port))
            time.sleep(pause_s)
    return lines


@dataclass
class RunnerRun:
    model: str
    run_key: str
    results: list[dict]
    failure_code: str


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "helical_airflow.cli", *args], capture_output=True, text=True,
                          env=env, timeout=600)  # fmt: skip


@pytest.fixture(scope="module")
def runner_run(pipeline: Pipeline, sample_h5ad: Path, fixture_cache: str, tmp_path_factory: pytest.TempPathFactory
               ) -> RunnerRun:  # fmt: skip
    """A real embed-shard that succeeds and one whose input was truncated after planning (E3xx)."""
    tmp = tmp_path_factory.mktemp("runner")
    env = {
        **os.environ,
        "HELICAL_AIRFLOW_STATSD_HOST": "127.0.0.1",
        "HELICAL_AIRFLOW_STATSD_PORT": str(pipeline.statsd_port),
    }
    common = ["--model", "geneformer", "--device", "cpu", "--cache-dir", fixture_cache, "--out", str(tmp / "out")]
    planned = cli("plan", str(sample_h5ad), "--shard-size", "700", *common, env=env)
    assert planned.returncode == 0, planned.stderr
    plan_path = planned.stdout.strip().splitlines()[-1]
    shard = cli("embed-shard", "--plan", plan_path, "--shard", "0", env=env)
    assert shard.returncode == 0, shard.stderr
    plan = json.loads(Path(plan_path).read_text())

    broken = tmp / "broken.h5ad"
    shutil.copy(sample_h5ad, broken)
    planned = cli("plan", str(broken), "--shard-size", "700", *common, env=env)
    assert planned.returncode == 0, planned.stderr
    with open(broken, "r+b") as fh:
        fh.truncate(4096)
    failed = cli("embed-shard", "--plan", planned.stdout.strip().splitlines()[-1], "--shard", "0", env=env)
    code = re.search(r"error (E\d{3})", failed.stderr)
    assert failed.returncode != 0 and code, failed.stderr
    result = json.loads((Path(plan["out_dir"]) / "shards" / "0.json").read_text())  # the record launchers read
    return RunnerRun(plan["params"]["model"], plan["run_key"], [result], code.group(1))


@pytest.fixture(scope="module")
def fed(pipeline: Pipeline, runner_run: RunnerRun) -> tuple[Pipeline, RunnerRun, list[str]]:
    lines = replay_capture(pipeline.statsd_port)
    # let Prometheus scrape the last samples and evaluate the recording rules over them
    wait_for(lambda: bool(pipeline.instant("airflow:dagrun_finished:increase1h")), 30, "recording rules")
    wait_for(lambda: bool(pipeline.instant("helical_embed_failures_total")), 30, "the runner's failure metric")
    time.sleep(3)
    return pipeline, runner_run, lines


def panel_series(p: Pipeline, title: str) -> list[dict]:
    """Series of the first query of the panel with this title (all dashboards)."""
    for q in cq.dashboard_queries(VARIABLES):
        if q.where.endswith(f": {title}"):
            return p.instant(q.expr) if q.instant else p.range(q.expr)
    raise AssertionError(f"no panel titled {title!r}")


def capture_ids(lines: list[str], pattern: str) -> set[tuple[str, ...]]:
    return {m.groups() for line in lines if (m := re.fullmatch(pattern, line.split(":", 1)[0]))}


def test_every_dashboard_rule_and_docs_query_parses(fed: tuple[Pipeline, RunnerRun, list[str]]) -> None:
    p, _, _ = fed
    queries = cq.all_queries(VARIABLES)
    prometheus = cq.Prometheus(p.prometheus, window_s=time.time() - p.started)
    errors, empty, with_data = cq.check(prometheus, queries)
    print(f"\n{len(queries)} dashboard/rule/docs queries parsed by Prometheus; {with_data} returned series here "
          "(cAdvisor panels and quiet alerts return none without Docker or trouble)")  # fmt: skip
    assert errors == []
    assert empty == [], f"documented queries that return nothing after a run: {empty}"
    assert len(queries) > 40 and any(q.documented for q in queries)


def test_scheduler_heartbeat_panel_shows_beats(fed: tuple[Pipeline, RunnerRun, list[str]]) -> None:
    p, _, _ = fed
    series = panel_series(p, "Scheduler heartbeat")
    assert series and max(float(v) for s in series for _, v in s["values"]) > 0


def test_dag_run_panels_show_the_dags_that_ran(fed: tuple[Pipeline, RunnerRun, list[str]]) -> None:
    p, _, lines = fed
    ran = capture_ids(lines, r"airflow\.dagrun\.duration\.(success|failed)\.([^.]+)")
    expected = {(dag, state) for state, dag in ran}
    table = panel_series(p, "DAG runs by outcome")
    assert {(s["metric"]["dag_id"], s["metric"]["state"]) for s in table} == expected
    finished = panel_series(p, "DAG runs finished (last hour)")
    assert {(s["metric"]["dag_id"], s["metric"]["state"]) for s in finished} == expected
    counts = {(s["metric"]["dag_id"], s["metric"]["state"]): float(s["value"][1]) for s in table}
    for dag, state in expected:  # every finished run of the capture is counted
        assert counts[(dag, state)] == sum(1 for x in lines if x.startswith(f"airflow.dagrun.duration.{state}.{dag}:"))


def test_task_duration_panel_has_every_task_that_ran(fed: tuple[Pipeline, RunnerRun, list[str]]) -> None:
    p, _, lines = fed
    tasks = capture_ids(lines, r"airflow\.dag\.([^.]+)\.([^.]+)\.duration")
    series = panel_series(p, "Task duration p95")
    assert {(s["metric"]["dag_id"], s["metric"]["task_id"]) for s in series} == tasks
    assert all(float(s["values"][-1][1]) > 0 for s in series)


def test_runner_panels_show_the_model_that_ran(fed: tuple[Pipeline, RunnerRun, list[str]]) -> None:
    p, run, _ = fed
    result = run.results[0]
    cells_per_s = panel_series(p, "Cells/s per model")
    assert [(s["metric"]["model"], s["metric"]["device"]) for s in cells_per_s] == [(run.model, result["device"])]
    assert float(cells_per_s[0]["values"][-1][1]) == pytest.approx(result["cells"] / result["seconds"], rel=1e-3)
    memory = panel_series(p, "Peak memory per model")
    assert {s["metric"]["model"] for s in memory} == {run.model}
    assert float(memory[0]["values"][-1][1]) == pytest.approx(result["peak_rss_mb"] * 2**20, rel=1e-3)
    failures = panel_series(p, "Shard failures by error code")
    assert [(s["metric"]["model"], s["metric"]["code"]) for s in failures] == [(run.model, run.failure_code)]


def test_the_failed_shard_fires_its_alert(fed: tuple[Pipeline, RunnerRun, list[str]]) -> None:
    p, run, _ = fed
    wait_for(lambda: bool(p.instant('ALERTS{alertname="HelicalShardFailures"}')), 30, "HelicalShardFailures")
    (alert,) = p.instant('ALERTS{alertname="HelicalShardFailures"}')
    assert alert["metric"]["code"] == run.failure_code and alert["metric"]["model"] == run.model
