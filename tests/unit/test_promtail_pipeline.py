"""monitoring/promtail/promtail.yml's task-log pipeline, run over real lines: a shard process's JSON line made by
helical_airflow.logs, relayed as an Airflow 3 task-log line made by Airflow's own logging (airflow.sdk.log, as
the task process writes it), and a plain Airflow line.

Promtail itself cannot be installed here (no Debian or PyPI package, no download), so the stages are applied
as Promtail's documentation defines them (regex, json with simple JMESPath names, labels, structured_metadata);
the test fails if the config uses a stage or an expression this reading does not cover."""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from helical_airflow import logs

REPO = Path(__file__).resolve().parents[2]
TASK_LOG = "/opt/airflow/logs/dag_id=helical_model_workflow/run_id=manual__2026-12-01/task_id=embed_shard/map_index=2/attempt=1.log"  # noqa: E501
SIMPLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _stages(job: str) -> list[dict[str, Any]]:
    config = yaml.safe_load((REPO / "monitoring" / "promtail" / "promtail.yml").read_text())
    (found,) = [j for j in config["scrape_configs"] if j["job_name"] == job]
    return found["pipeline_stages"]


def apply(stages: list[dict[str, Any]], line: str, labels: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """Promtail's stages as documented: the extracted map starts with the target's labels (filename included)."""
    extracted: dict[str, Any] = dict(labels)
    out_labels, metadata = dict(labels), {}
    for stage in stages:
        ((kind, cfg),) = stage.items()
        cfg = cfg or {}
        if kind == "regex":
            source = extracted.get(cfg["source"]) if "source" in cfg else line
            match = re.search(cfg["expression"], source or "")
            if match:
                extracted.update({k: v for k, v in match.groupdict().items() if v is not None})
        elif kind == "json":
            source = extracted.get(cfg["source"]) if "source" in cfg else line
            try:
                data = json.loads(source)
            except (TypeError, ValueError):
                continue  # not JSON: the stage logs it and the entry goes on unchanged (drop_malformed: false)
            if not isinstance(data, dict):
                continue
            for name, expr in cfg["expressions"].items():
                expr = expr or name
                assert SIMPLE_NAME.match(expr), f"this test reads simple JMESPath names only, not {expr!r}"
                extracted[name] = data.get(expr)  # a missing key: JMESPath null
        elif kind in ("labels", "structured_metadata"):
            target = out_labels if kind == "labels" else metadata
            for name, source in cfg.items():
                value = extracted.get(source or name)
                if value is not None:
                    target[name] = value if isinstance(value, str) else json.dumps(value)
        else:
            raise AssertionError(f"stage {kind!r} is not covered by this test")
    return out_labels, metadata


def _airflow_lines(messages: list[tuple[int, str]]) -> list[str]:
    """Task-log lines exactly as Airflow 3's task process writes them (its structlog JSON renderer)."""
    from airflow.sdk import log as airflow_log

    buf = io.BytesIO()
    airflow_log.configure_logging(json_output=True, output=buf, sending_to_supervisor=True,
                                  cache_logger_on_first_use=False)  # fmt: skip
    try:
        relay = logging.getLogger("helical_airflow.launchers.local")
        for level, message in messages:
            relay.log(level, message)
    finally:
        logging.getLogger().handlers.clear()
    return buf.getvalue().decode().splitlines()


def _runner_line() -> str:
    buf = io.StringIO()
    logger = logging.getLogger("helical_airflow.embed.test")
    logger.propagate = False
    logger.addHandler(logs.json_handler(buf))
    logger.setLevel(logging.INFO)
    with logs.log_context(run_key="4731183ee9044a83", shard=2, model="geneformer", dataset="sample"):
        logger.warning("FIXTURE model: random weights")
    (line,) = buf.getvalue().splitlines()
    return line


def test_runner_json_lines_carry_the_context() -> None:
    record = json.loads(_runner_line())
    assert record["message"] == "FIXTURE model: random weights" and record["level"] == "warning"
    assert (record["run_key"], record["shard"], record["model"], record["dataset"]) == (
        "4731183ee9044a83", 2, "geneformer", "sample")  # fmt: skip
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$", record["time"])
    assert logs.current_context() == {}  # the block ended


def test_promtail_labels_runner_lines_inside_airflow_task_logs() -> None:
    pytest.importorskip("airflow")
    relayed, plain = _airflow_lines([(logging.INFO, _runner_line()), (logging.INFO, "launching: helical-airflow")])
    assert json.loads(relayed)["event"].startswith("{")  # the runner's line, whole, as the event
    stages = _stages("airflow-tasks")
    static = {"job": "airflow", "filename": TASK_LOG}

    labels, metadata = apply(stages, relayed, static)
    assert labels == {**static, "dag_id": "helical_model_workflow", "task_id": "embed_shard",
                      "level": "warning", "model": "geneformer", "run_key": "4731183ee9044a83"}  # fmt: skip
    assert metadata == {"shard": "2", "map_index": "2", "run_id": "manual__2026-12-01"}

    labels, metadata = apply(stages, plain, static)  # Airflow's own line: its level, no runner fields
    assert labels == {**static, "dag_id": "helical_model_workflow", "task_id": "embed_shard", "level": "info"}
    assert metadata == {"map_index": "2", "run_id": "manual__2026-12-01"}
