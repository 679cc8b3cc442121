"""Load: N runs of a tiny input triggered at once on the local stack; are they all done, once each?

Triggers --runs (default 50) runs of `helical_model_workflow` concurrently through the REST API, each on the
same tiny .h5ad (the first --cells cells of data/sample.h5ad) with its own `seed` (part of the run key, so each
run is distinct work and the content-hashed resume cannot fold them together), then polls until every run is
terminal or --deadline-s passes. Meanwhile it reads the scheduler's heartbeat from /api/v2/monitor/health about
once a second. Reports: triggered, succeeded, failed, lost (a trigger that never became a run, or a run not
terminal by the deadline), duplicated (two runs sharing a run folder, a run id listed twice or one nobody
triggered, a shard record outside the plan), retried task instances and retried embed tasks that embedded a shard
again, p50/p95/max run latency (queued -> end), wall time, throughput, the
longest gap between successive scheduler heartbeats and the oldest heartbeat seen, and the machine.
Target: every run succeeds, none lost, none duplicated. Exits 1 when the target is missed.

    .venv/bin/python bench/load.py                          # own stack on private ports in a temp folder
    .venv/bin/python bench/load.py --runs 5 --json out.json
    .venv/bin/python bench/load.py --api-url http://127.0.0.1:28080 [--state-dir .state/stack]  # a running stack

By default it starts its own stack (no monitoring services) in a temp folder with an offline fixture weights
cache, and stops it afterwards, also on Ctrl-C or failure. With --api-url it uses a running stack: the admin
password comes from that stack's secrets file and the input is written to its data folder. All traffic goes to
127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DAG = "helical_model_workflow"
TERMINAL = {"success", "failed"}
#: StackConfig.ports names of the core stack (what an own stack needs free ports for)
CORE_PORTS = ["postgres", "redis", "api", "scheduler_health", "worker_log", "trigger_log", "mlflow", "statsd"]


# ---------------------------------------------------------------- summary math (pure; tests/unit/test_bench_load.py)


def parse_ts(value: str | None) -> float | None:
    """Seconds since the epoch of an ISO-8601 timestamp as the API writes it (`...Z` or `+00:00`); None stays."""
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def heartbeat_stats(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """From health polls {"t": epoch seconds of the poll, "heartbeat": ISO or None, "status": ...}.

    max_gap_s: the largest difference between successive distinct heartbeat timestamps (how long the scheduler
    went without heartbeating); max_age_s: the largest (poll time - heartbeat) seen (how stale it looked);
    failed_polls: polls that got no answer (API down or too slow).
    """
    beats = sorted({ts for s in samples if (ts := parse_ts(s.get("heartbeat"))) is not None})
    gaps = [b - a for a, b in zip(beats, beats[1:], strict=False)]
    ages = [s["t"] - ts for s in samples if (ts := parse_ts(s.get("heartbeat"))) is not None]
    return {
        "polls": len(samples),
        "failed_polls": sum(1 for s in samples if s.get("heartbeat") is None),
        "distinct_heartbeats": len(beats),
        "max_gap_s": max(gaps) if gaps else None,
        "max_age_s": max(ages) if ages else None,
        "unhealthy_polls": sum(1 for s in samples if s.get("status") not in (None, "healthy")),
    }


@dataclass
class Trigger:
    """One POST: the run id we asked for, when, how long the call took, and its error if it failed."""

    run_id: str
    seed: int
    sent_at: float
    seconds: float = 0.0
    error: str | None = None


@dataclass
class Observed:
    """What the stack says once the polling stopped."""

    runs: dict[str, dict[str, Any]] = field(default_factory=dict)  # run id -> DAGRunResponse
    task_instances: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # run id -> its TIs
    run_keys: dict[str, str] = field(default_factory=dict)  # run id -> plan_shards' run_key XCom
    #: run id -> {"shards": planned count, "records": [shard index of each shards/<i>.json], "manifest": [...]}
    folders: dict[str, dict[str, Any]] = field(default_factory=dict)
    seen_run_ids: list[str] = field(default_factory=list)  # every run id the API listed with our prefix


def summarize(triggers: list[Trigger], seen: Observed, wall_s: float) -> dict[str, Any]:
    """Counts, latencies and the duplicate checks of one load run (no I/O: tested on recorded structures)."""
    states = {t.run_id: (seen.runs.get(t.run_id) or {}).get("state") for t in triggers}
    succeeded = sorted(r for r, s in states.items() if s == "success")
    failed = sorted(r for r, s in states.items() if s == "failed")
    never_appeared = sorted(r for r, s in states.items() if s is None)
    not_terminal = sorted(r for r, s in states.items() if s is not None and s not in TERMINAL)
    latencies = []
    run_seconds = []
    for run_id in succeeded + failed:
        run = seen.runs[run_id]
        end = parse_ts(run.get("end_date"))
        queued = parse_ts(run.get("queued_at")) or parse_ts(run.get("run_after"))
        start = parse_ts(run.get("start_date"))
        if end is not None and queued is not None:
            latencies.append(end - queued)
        if end is not None and start is not None:
            run_seconds.append(end - start)
    # duplicates: the same run id listed twice, two runs in one run folder, a shard embedded by two attempts
    id_counts = Counter(seen.seen_run_ids)
    twice_listed = sorted(r for r, n in id_counts.items() if n > 1)
    ours = {t.run_id for t in triggers}
    foreign = sorted(set(seen.seen_run_ids) - ours)  # a run with our prefix that no trigger of ours asked for
    by_key: dict[str, list[str]] = {}
    for run_id, key in seen.run_keys.items():
        by_key.setdefault(key, []).append(run_id)
    shared_folders = {key: sorted(ids) for key, ids in by_key.items() if len(ids) > 1}
    extra_records = {}
    reembedded = {}
    for run_id, folder in seen.folders.items():
        counts = Counter(folder.get("records", []))
        planned = folder.get("shards")
        extra = sorted(i for i, n in counts.items() if n > 1 or (planned is not None and not 0 <= i < planned))
        if extra:
            extra_records[run_id] = extra
    retried = []
    for run_id, tis in seen.task_instances.items():
        for ti in tis:
            if (ti.get("try_number") or 0) > 1:
                retried.append({"run_id": run_id, "task_id": ti["task_id"], "map_index": ti.get("map_index", -1),
                                "try_number": ti["try_number"], "state": ti.get("state")})  # fmt: skip
        # a retried embed task whose manifest says a shard was embedded (not reused): either the first attempt died
        # before finishing it (fine: its shards/<i>.json would have made the retry reuse it) or the shard was embedded
        # twice. The records cannot tell these apart, so it is reported, not counted as duplicated (the task logs can)
        embed_retries = [t for t in tis if t["task_id"].startswith("embed_shard") and (t.get("try_number") or 0) > 1]
        manifest = (seen.folders.get(run_id) or {}).get("manifest") or []
        if embed_retries and any(not s.get("reused") for s in manifest):
            reembedded[run_id] = [s["index"] for s in manifest if not s.get("reused")]
    duplicated = (
        len(twice_listed) + len(foreign) + sum(len(v) - 1 for v in shared_folders.values()) + len(extra_records)
    )
    first_sent = min((t.sent_at for t in triggers), default=0.0)
    trigger_s = [t.seconds for t in triggers]
    summary = {
        "triggered": len(triggers),
        "trigger_errors": sum(1 for t in triggers if t.error),
        "trigger_call_p50_s": percentile(trigger_s, 50),
        "trigger_call_max_s": max(trigger_s, default=None),
        "trigger_span_s": max((t.sent_at + t.seconds for t in triggers), default=first_sent) - first_sent,
        "succeeded": len(succeeded),
        "failed": len(failed),
        "lost": len(never_appeared) + len(not_terminal),
        "never_appeared": never_appeared,
        "not_terminal": {r: states[r] for r in not_terminal},
        "failed_runs": failed,
        "duplicated": duplicated,
        "run_ids_listed_twice": twice_listed,
        "runs_nobody_triggered": foreign,
        "shared_run_folders": shared_folders,
        "extra_shard_records": extra_records,
        "possibly_reembedded": reembedded,
        "retried_task_instances": retried,
        "runs_with_run_key": len(seen.run_keys),  # how many runs the duplicate checks could see
        "run_folders_checked": len(seen.folders),
        "task_instances": sum(len(tis) for tis in seen.task_instances.values()),
        "latency_p50_s": percentile(latencies, 50),
        "latency_p95_s": percentile(latencies, 95),
        "latency_max_s": max(latencies, default=None),
        "run_seconds_p50": percentile(run_seconds, 50),
        "wall_s": wall_s,
        "runs_per_min": 60 * len(succeeded) / wall_s if wall_s > 0 else None,
    }
    summary["target_met"] = summary["succeeded"] == len(triggers) and summary["lost"] == 0 and duplicated == 0
    return summary


# ---------------------------------------------------------------- the stack and the input


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
                 platform.processor())  # fmt: skip
    try:
        import psutil

        ram = psutil.virtual_memory().total / 2**30
    except ImportError:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpus": os.cpu_count(), "cpu_model": model, "ram_gib": round(ram, 1),
            "system": f"{platform.system()} {platform.release()}", "python": platform.python_version()}  # fmt: skip


def free_ports(names: list[str]) -> dict[str, int]:
    tcp = [socket.socket() for _ in names]
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for sock in tcp:
            sock.bind(("127.0.0.1", 0))
        udp.bind(("127.0.0.1", 0))
        ports = {name: sock.getsockname()[1] for name, sock in zip(names, tcp, strict=True)}
        ports["statsd"] = udp.getsockname()[1]  # UDP
        return ports
    finally:
        for sock in [*tcp, udp]:
            sock.close()


def cli() -> list[str]:
    script = Path(sys.executable).with_name("helical-airflow")
    return [str(script)] if script.exists() else [sys.executable, "-m", "helical_airflow.cli"]


def write_input(source: Path, cells: int, out: Path) -> int:
    import anndata as ad

    adata = ad.read_h5ad(source)
    subset = adata[: min(cells, adata.n_obs)].copy()
    out.parent.mkdir(parents=True, exist_ok=True)
    subset.write_h5ad(out)
    return int(subset.n_obs)


class Heartbeats(threading.Thread):
    """Polls /api/v2/monitor/health (no login) about once a second until stopped or its deadline passes."""

    def __init__(self, api_url: str, deadline: float, interval_s: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.url = api_url.rstrip("/") + "/api/v2/monitor/health"
        self.deadline = deadline
        self.interval_s = interval_s
        self.samples: list[dict[str, Any]] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        from helical_airflow.stack.health import http_json

        while not self.stop_event.is_set() and time.monotonic() < self.deadline:
            t0 = time.monotonic()
            body = http_json(self.url, timeout=5.0) or {}
            scheduler = body.get("scheduler") or {}
            self.samples.append({"t": time.time(), "heartbeat": scheduler.get("latest_scheduler_heartbeat"),
                                 "status": scheduler.get("status")})  # fmt: skip
            self.stop_event.wait(max(0.0, self.interval_s - (time.monotonic() - t0)))


def trigger_all(client: Any, n: int, prefix: str, conf: dict[str, Any], seed0: int) -> list[Trigger]:
    """POST all n runs at once (one thread each), each with its own run id and seed."""
    client.token()  # log in once, before the threads share the client

    def post(i: int) -> Trigger:
        trig = Trigger(run_id=f"{prefix}-{i:03d}", seed=seed0 + i, sent_at=time.time())
        t0 = time.monotonic()
        try:
            body = {"dag_run_id": trig.run_id, "logical_date": None, "conf": {**conf, "seed": trig.seed}}
            client.post(f"/dags/{DAG}/dagRuns", body)
        except Exception as exc:  # noqa: BLE001 (recorded: a trigger that failed is a finding, not a crash)
            trig.error = f"{type(exc).__name__}: {getattr(exc, 'message', exc)}"[:500]
        trig.seconds = time.monotonic() - t0
        return trig

    start = threading.Barrier(n)

    def post_together(i: int) -> Trigger:
        start.wait(timeout=60)
        return post(i)

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(post_together, range(n)))


def list_runs(client: Any, prefix: str) -> list[dict[str, Any]]:
    """Every run of the DAG whose id contains `prefix` (paged)."""
    runs: list[dict[str, Any]] = []
    while True:
        body = client.get(f"/dags/{DAG}/dagRuns?run_id_pattern={prefix}&limit=100&offset={len(runs)}&order_by=id")
        runs += body["dag_runs"]
        if not body["dag_runs"] or len(runs) >= body["total_entries"]:
            return runs


def poll_until_done(client: Any, triggers: list[Trigger], prefix: str, deadline: float, poll_s: float,
                    echo: Any) -> list[dict[str, Any]]:  # fmt: skip
    wanted = {t.run_id for t in triggers}
    last_line = ""
    runs: list[dict[str, Any]] = []
    while True:
        try:
            runs = list_runs(client, prefix)
        except Exception as exc:  # noqa: BLE001 (a slow or restarting API: try again until the deadline)
            echo(f"  poll failed: {exc}")
        by_id = {r["dag_run_id"]: r for r in runs}
        states = Counter(by_id[r]["state"] if r in by_id else "not listed" for r in wanted)
        line = ", ".join(f"{k} {v}" for k, v in sorted(states.items()))
        if line != last_line:
            echo(f"  {time.strftime('%H:%M:%S')} {line}")
            last_line = line
        if all(r in by_id and by_id[r]["state"] in TERMINAL for r in wanted) or time.monotonic() > deadline:
            return runs
        time.sleep(poll_s)


def observe(client: Any, runs: list[dict[str, Any]], output_dir: Path | None) -> Observed:
    """Task instances, run keys and run-folder records of every run listed."""
    seen = Observed(seen_run_ids=[r["dag_run_id"] for r in runs])
    for run in runs:
        run_id = run["dag_run_id"]
        seen.runs[run_id] = run
        try:
            seen.task_instances[run_id] = client.task_instances(DAG, run_id)
        except Exception:  # noqa: BLE001, S112 (the run exists but its TIs cannot be read: counted as not observed)
            continue
        xcom = {}
        for key in ("run_key", "out_dir"):
            try:
                entry = client.get(f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/plan_shards/xcomEntries/{key}")
                xcom[key] = entry["value"]
            except Exception:  # noqa: BLE001, S112 (plan_shards never ran: no run folder to check)
                continue
        if "run_key" in xcom:
            seen.run_keys[run_id] = str(xcom["run_key"]).strip('"')
        folder = Path(str(xcom.get("out_dir", "")).strip('"')) if "out_dir" in xcom else None
        if folder is not None and output_dir is not None and folder.is_dir():
            seen.folders[run_id] = read_folder(folder)
    return seen


def read_folder(folder: Path) -> dict[str, Any]:
    """The planned shard count, the index in each shards/<i>.json record, and the manifest's shard entries."""
    plan = json.loads((folder / "plan.json").read_text()) if (folder / "plan.json").is_file() else {}
    records = []
    for path in sorted((folder / "shards").glob("*.json")):
        try:
            records.append(int(json.loads(path.read_text())["index"]))
        except (ValueError, KeyError, OSError):
            records.append(-1)
    manifest = folder / "manifest.json"
    shards = json.loads(manifest.read_text()).get("shards", []) if manifest.is_file() else []
    return {"shards": len(plan.get("shards", [])) if plan else None, "records": records,
            "manifest": [{"index": s["index"], "reused": s.get("reused", False)} for s in shards]}  # fmt: skip


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=50, help="runs triggered at once (default 50)")
    p.add_argument("--cells", type=int, default=30, help="cells of data/sample.h5ad in the tiny input (default 30)")
    p.add_argument("--shard-size", type=int, default=30, help="cells per shard (default 30: one shard per run)")
    p.add_argument("--model", default="geneformer", help="model (its offline fixture is built; default geneformer)")
    p.add_argument("--deadline-s", type=float, default=3600, help="stop polling after this long (default 3600)")
    p.add_argument("--poll-s", type=float, default=5.0, help="seconds between run-state polls (default 5)")
    p.add_argument("--seed0", type=int, default=None, help="first seed (default: random, so no earlier run is reused)")
    p.add_argument("--json", type=Path, help="also write the summary as JSON here")
    p.add_argument("--api-url", help="use this running stack instead of starting one (must be 127.0.0.1/localhost)")
    p.add_argument("--state-dir", type=Path, help="with --api-url: that stack's state folder (secrets, data folder)")
    p.add_argument("--cache-dir", help="weights cache for an own stack (default: build the fixture in the temp folder)")
    p.add_argument(
        "--worker-concurrency",
        type=int,
        default=None,
        help="own stack: Celery worker concurrency (default: the stack's, HELICAL_STACK_WORKER_CONCURRENCY)",
    )
    p.add_argument("--umap", action="store_true",
                   help="own stack: keep the report's UMAP (~15-20 s of numba compilation in every publish task); "
                        "off by default, as in the tests, so the load measures the orchestration")  # fmt: skip
    p.add_argument("--ready-timeout-s", type=float, default=600,
                   help="own stack: how long each service may take to become healthy (default 600: the stack's 120 "
                        "s was too short for the api-server at a load average of 11 on 2 cores)")  # fmt: skip
    p.add_argument("--keep", action="store_true", help="own stack: keep the temp folder (logs) afterwards")
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be at least 1")
    if args.api_url and not args.api_url.split("//", 1)[-1].startswith(("127.0.0.1", "localhost")):
        p.error("--api-url must be a local stack (127.0.0.1 or localhost)")
    return args


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO / "src"))
    from helical_airflow.stack import manager
    from helical_airflow.stack.client import AirflowClient
    from helical_airflow.stack.config import StackConfig

    signal.signal(signal.SIGTERM, _interrupt)  # stop the own stack on kill too, not only on Ctrl-C
    echo = lambda msg: print(msg, flush=True)  # noqa: E731
    work: Path | None = None
    cfg = None
    own = args.api_url is None
    try:
        if own:
            work = Path(tempfile.mkdtemp(prefix="helical-load-"))
            work.chmod(0o755)  # Postgres runs as the postgres user when we are root
            data = work / "data"
            cache = args.cache_dir
            if cache is None:
                cache = str(work / "weights")
                subprocess.run([*cli(), "models", "fixture", "--out", cache, "--model", args.model],
                               check=True, capture_output=True, timeout=600)  # fmt: skip
            if not args.umap:
                os.environ["HELICAL_AIRFLOW_REPORT_UMAP"] = "0"  # the stack's services inherit this environment
            cfg = StackConfig.from_env(state_dir=work / "state", data_dir=data, output_dir=data / "outputs",
                                       cache_dir=cache, monitoring=False, python=sys.executable,
                                       worker_concurrency=args.worker_concurrency,
                                       ready_timeout_s=args.ready_timeout_s)  # fmt: skip
            cfg.ports.update(free_ports([p for p in CORE_PORTS if p != "statsd"]))
            n_cells = write_input(REPO / "data" / "sample.h5ad", args.cells, data / "load.h5ad")
            t0 = time.monotonic()
            secrets, _ = manager.up(cfg, echo=lambda _: None)
            echo(f"own stack up in {time.monotonic() - t0:.0f}s at {cfg.api_url} (state {cfg.state_dir})")
            api_url, password, output_dir = cfg.api_url, secrets["admin_password"], cfg.output_dir
        else:
            cfg = manager.saved_config(StackConfig.from_env(state_dir=args.state_dir))
            if not cfg.secrets_file.is_file():
                sys.exit(f"no secrets file {cfg.secrets_file}: pass --state-dir of the stack at {args.api_url}")
            password = json.loads(cfg.secrets_file.read_text())["admin_password"]
            api_url, output_dir = args.api_url, cfg.output_dir
            n_cells = write_input(REPO / "data" / "sample.h5ad", args.cells, cfg.data_dir / "load.h5ad")
        client = AirflowClient(api_url, "admin", password)
        client.wait_for_dag(DAG)
        result = run_load(client, args, api_url, output_dir, echo)
        result["input"] = {"cells": n_cells, "shard_size": args.shard_size, "model": args.model,
                           "stack": "own (temp folder, private ports)" if own else api_url,
                           "worker_concurrency": cfg.worker_concurrency if own else None}  # fmt: skip
    finally:
        if own and cfg is not None:
            echo("stopping the own stack ...")
            manager.down(cfg, echo=lambda _: None)
        if work is not None:
            if args.keep:
                echo(f"kept {work}")
            else:
                shutil.rmtree(work, ignore_errors=True)
    report(result, echo)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str) + "\n")
        echo(f"JSON summary: {args.json}")
    return 0 if result["summary"]["target_met"] else 1


def run_load(client: Any, args: argparse.Namespace, api_url: str, output_dir: Path, echo: Any) -> dict[str, Any]:
    # numpy takes seeds < 2**32 (a larger one fails every embed attempt): a random start in [0, 2**30)
    seed0 = args.seed0 if args.seed0 is not None else int.from_bytes(os.urandom(4), "big") >> 2
    prefix = f"load-{uuid.uuid4().hex[:8]}"
    conf = {"input_path": "load.h5ad", "model": args.model, "shard_size": args.shard_size, "device": "cpu"}
    deadline = time.monotonic() + args.deadline_s
    beats = Heartbeats(api_url, deadline + 60)
    load_before = load_average()
    beats.start()
    time.sleep(3)  # a few heartbeats before the burst: the baseline gap
    echo(f"triggering {args.runs} runs at once (run ids {prefix}-000.., seeds {seed0}..) "
         f"at {time.strftime('%H:%M:%S')}")  # fmt: skip
    t0 = time.monotonic()
    triggers = trigger_all(client, args.runs, prefix, conf, seed0)
    errors = [t for t in triggers if t.error]
    echo(f"  {len(triggers) - len(errors)} accepted, {len(errors)} refused in {time.monotonic() - t0:.1f}s"
         + (f"; first error: {errors[0].error}" if errors else ""))  # fmt: skip
    load_samples = [load_before]
    stop_load = threading.Event()

    def sample_load() -> None:
        while not stop_load.wait(30):
            load_samples.append(load_average())

    sampler = threading.Thread(target=sample_load, daemon=True)
    sampler.start()
    runs = poll_until_done(client, triggers, prefix, deadline, args.poll_s, echo)
    wall = time.monotonic() - t0
    stop_load.set()
    load_after = load_average()
    beats.stop_event.set()
    beats.join(timeout=10)
    seen = observe(client, runs, output_dir)
    summary = summarize(triggers, seen, wall)
    summary["heartbeat"] = heartbeat_stats(beats.samples)
    return {
        "summary": summary,
        "machine": {
            **machine(),
            "load_average_before": load_before,
            "load_average_after": load_after,
            "load_average_1min_max": max(s[0] for s in [*load_samples, load_after]),
        },  # fmt: skip
        "triggers": [t.__dict__ for t in triggers],
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def report(result: dict[str, Any], echo: Any) -> None:
    s, m, hb = result["summary"], result["machine"], result["summary"]["heartbeat"]
    echo(f"\nmachine: {m['cpus']} CPUs ({m['cpu_model']}), {m['ram_gib']} GiB RAM, {m['system']}, "
         f"Python {m['python']}; load average before {m['load_average_before']}, after {m['load_average_after']}, "
         f"highest 1-min {m['load_average_1min_max']}")  # fmt: skip
    inp = result.get("input", {})
    echo(f"input: {inp.get('cells')} cells, shard size {inp.get('shard_size')}, model {inp.get('model')} (fixture), "
         f"stack {inp.get('stack')}, worker concurrency {inp.get('worker_concurrency')}")  # fmt: skip
    echo(f"triggered {s['triggered']} (POSTs refused {s['trigger_errors']}; each call p50 "
         f"{_s(s['trigger_call_p50_s'])}, slowest {_s(s['trigger_call_max_s'])}; all sent within "
         f"{_s(s['trigger_span_s'])})")  # fmt: skip
    echo(f"succeeded {s['succeeded']}, failed {s['failed']}, lost {s['lost']} (never appeared "
         f"{len(s['never_appeared'])}, not terminal by the deadline {len(s['not_terminal'])}), duplicated "
         f"{s['duplicated']}, possibly re-embedded shards {len(s['possibly_reembedded'])}")  # fmt: skip
    if s["failed_runs"]:
        echo(f"  failed runs: {', '.join(s['failed_runs'][:10])}")
    if s["not_terminal"]:
        echo(f"  not terminal: {dict(list(s['not_terminal'].items())[:10])}")
    echo(f"checked: {s['runs_with_run_key']} run keys, {s['run_folders_checked']} run folders, "
         f"{s['task_instances']} task instances")  # fmt: skip
    echo(f"retried task instances: {len(s['retried_task_instances'])}"
         + "".join(f"\n  {r['run_id']} {r['task_id']}[{r['map_index']}] try {r['try_number']} {r['state']}"
                   for r in s["retried_task_instances"][:10]))  # fmt: skip
    echo(f"run latency (queued -> end): p50 {_s(s['latency_p50_s'])}, p95 {_s(s['latency_p95_s'])}, max "
         f"{_s(s['latency_max_s'])}; one run's own time (start -> end) p50 {_s(s['run_seconds_p50'])}")  # fmt: skip
    rate = "-" if s["runs_per_min"] is None else f"{s['runs_per_min']:.2f}"
    echo(f"wall time (first POST -> last run terminal): {_s(s['wall_s'])}; throughput {rate} runs/min")
    echo(f"scheduler heartbeat: longest gap {_s(hb['max_gap_s'])}, oldest seen {_s(hb['max_age_s'])} "
         f"({hb['polls']} polls, {hb['failed_polls']} unanswered, {hb['unhealthy_polls']} unhealthy)")  # fmt: skip
    verdict = "PASS" if s["target_met"] else "FAIL"
    echo(f"target: all {s['triggered']} succeed, none lost or duplicated -> {verdict}")


if __name__ == "__main__":
    sys.exit(main())
