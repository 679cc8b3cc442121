"""bench/load.py's summary math (percentiles, heartbeat gap, lost / duplicated detection) on structures shaped like
the real API's answers (recorded from the 50-run load on the local stack), and its --help; no stack is started."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_load", REPO / "bench" / "load.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_load"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _run(run_id: str, state: str, queued: str, start: str | None, end: str | None) -> dict:
    """A DAGRunResponse as GET /api/v2/dags/{dag}/dagRuns lists it (fields trimmed to those the bench reads)."""
    return {"dag_run_id": run_id, "dag_id": "helical_model_workflow", "logical_date": None, "queued_at": queued,
            "start_date": start, "end_date": end, "run_after": queued, "run_type": "manual", "state": state,
            "triggered_by": "rest_api", "conf": {"seed": 165038032, "model": "geneformer", "device": "cpu",
                                                 "input_path": "load.h5ad", "shard_size": 30}}  # fmt: skip


def _tis(run_id: str, embed_try: int = 1) -> list[dict]:
    names = ["validate_input", "plan_shards", "route_to_queue", "embed_shard", "embed_shard_gpu", "merge",
             "quality_gate", "publish"]  # fmt: skip
    return [{"task_id": n, "map_index": 0 if n == "embed_shard" else -1, "run_id": run_id, "state": "success",
             "try_number": embed_try if n == "embed_shard" else (0 if n == "embed_shard_gpu" else 1)}
            for n in names]  # fmt: skip


def test_percentile_matches_numpy(load: ModuleType) -> None:
    values = list(np.random.default_rng(3).exponential(100, 50))
    for q in (0, 50, 95, 100):
        assert load.percentile(values, q) == pytest.approx(np.percentile(values, q))
    assert load.percentile([], 50) is None
    assert load.percentile([7.0], 95) == 7.0


def test_heartbeat_gap_and_age(load: ModuleType) -> None:
    t0 = load.parse_ts("2026-12-02T00:54:56.360545+00:00")
    samples = [  # polls about once a second; the scheduler heartbeats every ~5 s, then misses one
        {"t": t0 + 0.5, "heartbeat": "2026-12-02T00:54:56.360545+00:00", "status": "healthy"},
        {"t": t0 + 1.5, "heartbeat": "2026-12-02T00:54:56.360545+00:00", "status": "healthy"},
        {"t": t0 + 5.2, "heartbeat": "2026-12-02T00:55:01.360545+00:00", "status": "healthy"},
        {"t": t0 + 9.0, "heartbeat": None, "status": None},  # the API did not answer in time
        {"t": t0 + 14.0, "heartbeat": "2026-12-02T00:55:01.360545+00:00", "status": "unhealthy"},
        {"t": t0 + 17.5, "heartbeat": "2026-12-02T00:55:13.860545+00:00", "status": "healthy"},
    ]
    hb = load.heartbeat_stats(samples)
    assert hb["max_gap_s"] == pytest.approx(12.5)
    assert hb["max_age_s"] == pytest.approx(9.0)
    assert (hb["polls"], hb["failed_polls"], hb["distinct_heartbeats"], hb["unhealthy_polls"]) == (6, 1, 3, 1)
    assert load.heartbeat_stats([])["max_gap_s"] is None


def test_clean_load_meets_the_target(load: ModuleType) -> None:
    triggers = [load.Trigger(run_id=f"load-a1237920-{i:03d}", seed=i, sent_at=1_764_636_864.0 + i, seconds=13.1)
                for i in range(3)]  # fmt: skip
    seen = load.Observed(
        runs={
            "load-a1237920-000": _run(
                "load-a1237920-000",
                "success",
                "2026-12-02T00:54:34.621401Z",
                "2026-12-02T00:54:35.720465Z",
                "2026-12-02T00:56:34.621401Z",
            ),
            "load-a1237920-001": _run(
                "load-a1237920-001",
                "success",
                "2026-12-02T00:54:34.621401Z",
                "2026-12-02T00:56:00.000000Z",
                "2026-12-02T00:58:34.621401Z",
            ),
            "load-a1237920-002": _run(
                "load-a1237920-002",
                "success",
                "2026-12-02T00:54:34.621401Z",
                "2026-12-02T00:58:00.000000Z",
                "2026-12-02T01:00:34.621401Z",
            ),
        },  # fmt: skip
        task_instances={f"load-a1237920-{i:03d}": _tis(f"load-a1237920-{i:03d}") for i in range(3)},
        run_keys={
            "load-a1237920-000": "5e15aa69ae36771c",
            "load-a1237920-001": "a8cbc8369315734d",
            "load-a1237920-002": "0b1c2d3e4f506172",
        },  # fmt: skip
        folders={
            f"load-a1237920-{i:03d}": {"shards": 1, "records": [0], "manifest": [{"index": 0, "reused": False}]}
            for i in range(3)
        },  # fmt: skip
    )
    seen.seen_run_ids = list(seen.runs)
    s = load.summarize(triggers, seen, wall_s=366.0)
    assert (s["succeeded"], s["failed"], s["lost"], s["duplicated"]) == (3, 0, 0, 0)
    assert s["latency_p50_s"] == pytest.approx(240.0)
    assert s["latency_max_s"] == pytest.approx(360.0)
    assert s["latency_p95_s"] == pytest.approx(348.0)
    assert s["retried_task_instances"] == [] and s["target_met"]
    assert s["runs_per_min"] == pytest.approx(3 * 60 / 366)


def test_lost_failed_and_duplicated_runs_miss_the_target(load: ModuleType) -> None:
    ids = [f"load-x-{i:03d}" for i in range(5)]
    triggers = [load.Trigger(run_id=r, seed=i, sent_at=0.0) for i, r in enumerate(ids)]
    triggers[3].error = "StackError: cannot reach Airflow"  # its POST failed and the run never appeared
    q = "2026-12-02T00:54:34Z"
    seen = load.Observed(
        runs={
            ids[0]: _run(ids[0], "success", q, q, "2026-12-02T00:55:34Z"),
            ids[1]: _run(ids[1], "failed", q, q, "2026-12-02T00:56:34Z"),
            ids[2]: _run(ids[2], "success", q, q, "2026-12-02T00:57:34Z"),
            ids[4]: _run(ids[4], "queued", q, None, None),
        },  # fmt: skip
        task_instances={ids[0]: _tis(ids[0]), ids[1]: _tis(ids[1]), ids[2]: _tis(ids[2], embed_try=2)},
        run_keys={ids[0]: "samekey", ids[2]: "samekey"},  # two runs writing one run folder
        folders={
            ids[0]: {"shards": 1, "records": [0, 0, 1], "manifest": [{"index": 0, "reused": False}]},
            ids[2]: {"shards": 1, "records": [0], "manifest": [{"index": 0, "reused": False}]},
        },  # fmt: skip
        seen_run_ids=[ids[0], ids[1], ids[2], ids[2], ids[4], "load-x-999"],  # one listed twice, one nobody asked for
    )
    s = load.summarize(triggers, seen, wall_s=100.0)
    assert (s["succeeded"], s["failed"], s["lost"]) == (2, 1, 2)
    assert s["never_appeared"] == [ids[3]] and s["not_terminal"] == {ids[4]: "queued"}
    assert s["run_ids_listed_twice"] == [ids[2]] and s["runs_nobody_triggered"] == ["load-x-999"]
    assert s["shared_run_folders"] == {"samekey": [ids[0], ids[2]]}
    assert s["extra_shard_records"] == {ids[0]: [0, 1]}  # shard 0 recorded twice, shard 1 not in the plan
    assert s["duplicated"] == 4
    # its embed task ran twice and embedded (not reused) shard 0: reported, the records cannot say it was twice
    assert s["possibly_reembedded"] == {ids[2]: [0]}
    assert [r["task_id"] for r in s["retried_task_instances"]] == ["embed_shard"]
    assert s["trigger_errors"] == 1 and not s["target_met"]


def test_help_runs_without_a_stack() -> None:
    done = subprocess.run([sys.executable, str(REPO / "bench" / "load.py"), "--help"], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "--runs" in done.stdout and "--api-url" in done.stdout and "--deadline-s" in done.stdout
