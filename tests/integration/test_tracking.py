"""MLflow tracking against a real `mlflow server` (SQLite backend, served artifacts) on a free loopback port:
a CLI run is tracked with its parameters as executed, metrics and artifacts; a server that is down, answers
errors or never answers costs seconds, never the run; a rerun with the server up tracks the untracked run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

pytest.importorskip("mlflow")
from stack_helpers import free_ports, real_mlflow_server  # noqa: E402  (tests/stack_helpers.py)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with real_mlflow_server(tmp_path_factory) as uri:
        yield uri


def _run(sample: Path, cache: str, out: Path, *extra: str, env: dict[str, str] | None = None):
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "helical_airflow.cli", "run", str(sample), "--model", "geneformer", "--device", "cpu",
         "--shard-size", "350", "--cache-dir", cache, "--out", str(out), *extra],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "HELICAL_AIRFLOW_REPORT_UMAP": "0", **(env or {})},
    )  # fmt: skip
    return done, time.monotonic() - started


def _manifest(out: Path) -> dict:
    (manifest,) = [p for p in out.glob("sample/*/manifest.json") if not p.parent.is_symlink()]  # not latest/
    return json.loads(manifest.read_text())


def test_server_down_costs_seconds_then_a_rerun_tracks_the_run(
    mlflow_server: str, sample_h5ad: Path, fixture_cache: str, tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    down = f"http://127.0.0.1:{free_ports(1)[0]}"  # nothing listens there
    baseline, base_s = _run(sample_h5ad, fixture_cache, tmp_path / "untracked")
    assert baseline.returncode == 0, baseline.stderr[-3000:]
    first, first_s = _run(sample_h5ad, fixture_cache, tmp_path / "out", "--tracking-uri", down)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "marked untracked" in first.stderr and "Traceback" not in first.stderr
    assert first_s < base_s + 10, (first_s, base_s)
    record = _manifest(tmp_path / "out")["tracking"]
    assert record["status"] == "untracked" and record["uri"] == down and "not reachable" in record["error"]

    # the same command with the server up (through the setting this time): outputs are current, yet it is tracked
    again, _ = _run(sample_h5ad, fixture_cache, tmp_path / "out", env={"MLFLOW_TRACKING_URI": mlflow_server})
    assert again.returncode == 0, again.stderr[-3000:]
    assert "reused" in again.stderr  # the console says the shard was reused; the details are in run.log
    (run_log,) = [p for p in (tmp_path / "out").glob("sample/*/run.log") if not p.parent.is_symlink()]
    assert "outputs in" in run_log.read_text() and "are current" in run_log.read_text()
    manifest = _manifest(tmp_path / "out")
    record = manifest["tracking"]
    assert record["status"] == "tracked" and record["uri"] == mlflow_server

    client = MlflowClient(tracking_uri=mlflow_server)
    run = client.get_run(record["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["run_key"] == manifest["run_key"] and run.data.tags["label_key"] == "cell_type"
    params = run.data.params
    assert params["executed.device"] == "cpu" and params["executed.precision"] == "fp32"  # as run, not asked
    assert params["param.precision"] == "fp16" and params["executed.engine"] == manifest["shards"][0]["engine"]
    assert params["executed.batch_size"] == str(manifest["shards"][0]["batch_size"])
    metrics = run.data.metrics
    q = manifest["quality"]
    assert metrics["cells"] == 700 and metrics["cells_per_second"] > 0
    assert metrics["knn_accuracy"] == q["embedding_scores"]["knn_accuracy"]
    assert metrics["pca_knn_accuracy"] == q["pca_scores"]["knn_accuracy"]
    history = client.get_metric_history(run.info.run_id, "shard_seconds")
    assert sorted(m.step for m in history) == [0, 1]
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"manifest.json", "quality.json",
                                                                         "report.html"}  # fmt: skip

    # a third run finds it tracked: no second MLflow run
    third, _ = _run(sample_h5ad, fixture_cache, tmp_path / "out", "--tracking-uri", mlflow_server)
    assert third.returncode == 0
    assert _manifest(tmp_path / "out")["tracking"]["mlflow_run_id"] == record["mlflow_run_id"]
    experiment = client.get_experiment_by_name("helical-airflow")
    assert len(client.search_runs([experiment.experiment_id])) == 1


class _Failing(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        self.send_error(503, "down for maintenance")

    do_POST = do_GET

    def log_message(self, *args: object) -> None:
        """Quiet: the test asserts on what the client does, not on this server's log."""


def test_a_failing_or_silent_server_costs_at_most_a_few_seconds(tmp_path: Path) -> None:
    """Checked at the library level (no embedding): an HTTP 503 server, and one that accepts and never answers."""
    from helical_airflow import tracking

    failing = HTTPServer(("127.0.0.1", 0), _Failing)
    threading.Thread(target=failing.serve_forever, daemon=True).start()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel accepts connections; nobody ever reads or answers
    try:
        for uri, why in ((f"http://127.0.0.1:{failing.server_port}", "HTTP 503"),
                         (f"http://127.0.0.1:{silent.getsockname()[1]}", "timed out")):  # fmt: skip
            started = time.monotonic()
            record = tracking.track(None, None, uri)  # type: ignore[arg-type]  # fails at the probe, before both
            took = time.monotonic() - started
            assert record["status"] == "untracked" and why in record["error"], record
            assert took < tracking.PROBE_TIMEOUT_S + 2, took
    finally:
        failing.shutdown()
        silent.close()
