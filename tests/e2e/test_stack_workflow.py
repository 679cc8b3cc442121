"""End to end: the real local stack (Postgres, Redis, Airflow with the CeleryExecutor) runs
helical_model_workflow on the sample through the REST API, and its outputs equal a direct
`helical-airflow run`; a second trigger reuses every finished shard; `stack down` leaves nothing running."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest

pytest.importorskip("airflow")
pytest.importorskip("psycopg")

from stack_helpers import local_stack, require_binaries  # noqa: E402  (tests/stack_helpers.py)

from helical_airflow.stack import manager, process  # noqa: E402
from helical_airflow.stack.airflow_env import database_url  # noqa: E402
from helical_airflow.stack.client import AirflowClient  # noqa: E402
from helical_airflow.stack.config import StackConfig  # noqa: E402
from helical_airflow.stack.errors import StackError  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.stack]

DAG = "helical_model_workflow"
Stack = tuple[StackConfig, AirflowClient, dict[str, str]]
SHARD_SIZE = 250  # 700 cells -> 3 shards
CONF = {"input_path": "sample.h5ad", "model": "geneformer", "shard_size": SHARD_SIZE, "device": "cpu"}


@pytest.fixture(scope="module")
def stack(sample_h5ad: Path, fixture_cache: str) -> Iterator[Stack]:
    require_binaries("redis-server")
    with local_stack(sample_h5ad, fixture_cache, prefix="helical-e2e-", monitoring=False, wait_for_dag=DAG) as running:
        assert running.created
        cfg = running.cfg
        yield cfg, running.client, running.secrets
        pids = [r.pid for name in manager._known_names(cfg) if (r := process.read_pid(cfg.run_dir, name))]
    # local_stack ran `stack down`
    leftover = [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
    assert leftover == [], f"stack down left processes running: {leftover}"


def test_secrets_are_private_and_no_default_password(stack: Stack) -> None:
    cfg, client, secrets = stack
    assert cfg.secrets_file.stat().st_mode & 0o777 == 0o600
    with pytest.raises(StackError, match="HTTP 401"):
        AirflowClient(cfg.api_url, "admin", "admin").token()
    assert client.token()


def test_params_are_validated_at_trigger(stack: Stack) -> None:
    _, client, _ = stack
    for bad, code in (({"model": "no-such-model"}, "E201"), ({"input_path": "/etc/passwd.h5ad"}, "E513"),
                      ({"input_path": "../x.h5ad"}, "E513")):  # fmt: skip
        with pytest.raises(StackError, match="HTTP 400") as raised:
            client.trigger(DAG, {**CONF, **bad})
        assert f"error {code}" in raised.value.message and "fix:" in raised.value.message  # phrased like the CLI


def _stack_pids(cfg: StackConfig) -> set[int]:
    pids: set[int] = set()
    for name in manager._known_names(cfg):
        running = process.read_pid(cfg.run_dir, name)
        if running:
            main = psutil.Process(running.pid)
            pids |= {main.pid, *(child.pid for child in main.children(recursive=True))}
    return pids


def test_every_listening_socket_of_the_stack_is_on_loopback(stack: Stack) -> None:
    cfg, _, _ = stack
    pids = _stack_pids(cfg)
    listening = [c for c in psutil.net_connections(kind="inet") if c.pid in pids
                 and (c.status == psutil.CONN_LISTEN or (c.type == socket.SOCK_DGRAM and not c.raddr))]  # fmt: skip
    ports = {c.laddr.port for c in listening}
    wanted = {cfg.ports[name] for name in ("postgres", "redis", "api", "scheduler_health", "worker_log", "trigger_log")}
    assert wanted <= ports, f"not listening: {wanted - ports}"
    exposed = sorted({(c.laddr.ip, c.laddr.port, psutil.Process(c.pid).name()) for c in listening
                      if c.laddr.ip not in ("127.0.0.1", "::1")})  # fmt: skip
    assert exposed == [], f"listening beyond loopback: {exposed}"
    if shutil.which("ss"):  # the same answer from the kernel's socket table
        ss = subprocess.run(["ss", "-Hltnup"], capture_output=True, text=True, check=True).stdout.splitlines()
        ours = [line for line in ss if any(f"pid={pid}," in line for pid in pids)]
        assert ours and all(line.split()[4].rsplit(":", 1)[0] in ("127.0.0.1", "[::1]") for line in ours), ours


def _celery_results(cfg: StackConfig, secrets: dict[str, str], run_id: str) -> dict[int, tuple[str, str, str]]:
    """For each embed_shard task instance (a group of shards): the Celery result row of its executor task id."""
    import psycopg

    url = database_url(cfg, secrets, "postgresql")
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT ti.map_index, m.status, m.worker, m.queue FROM task_instance ti "
            "JOIN celery_taskmeta m ON m.task_id = ti.external_executor_id "
            "WHERE ti.dag_id = %s AND ti.run_id = %s AND ti.task_id = 'embed_shard'",
            (DAG, run_id),
        ).fetchall()
    return {row[0]: (row[1], row[2], row[3]) for row in rows}


def _groups(client: AirflowClient, run_id: str) -> list[list[int]]:
    """The shard groups plan_shards handed the embed task (one mapped task instance each)."""
    xcom = f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/plan_shards/xcomEntries/return_value?deserialize=true"
    return [item["shards"] for item in client.get(xcom)["value"]]


def _shard_results(client: AirflowClient, run_id: str, n_tasks: int) -> list[dict]:
    """Every shard's result, from the embed tasks' XComs (each returns its group's results)."""
    base = f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/embed_shard/xcomEntries/return_value"
    return [r for i in range(n_tasks) for r in client.get(f"{base}?map_index={i}&deserialize=true")["value"]]


def test_workflow_on_celery_equals_direct_run_and_reuses_shards(
    stack: Stack, fixture_cache: str, tmp_path: Path
) -> None:
    cfg, client, secrets = stack
    run_id = client.trigger(DAG, CONF)
    run = client.wait_for_run(DAG, run_id, timeout_s=900)
    tis = client.task_instances(DAG, run_id)
    assert run["state"] == "success", [(t["task_id"], t["map_index"], t["state"]) for t in tis]

    # every shard is in exactly one group; every mapped embed_shard (a group) ran on the default queue, through
    # the Celery worker, loading the model once for its group
    n = -(-700 // SHARD_SIZE)
    groups = _groups(client, run_id)
    assert n >= 3 and sorted(i for g in groups for i in g) == list(range(n))
    tasks = sorted((t for t in tis if t["task_id"] == "embed_shard"), key=lambda t: t["map_index"])
    assert [t["map_index"] for t in tasks] == list(range(len(groups)))
    assert all(t["state"] == "success" and t["queue"] == "default" for t in tasks)
    assert {t["state"] for t in tis if t["task_id"] == "embed_shard_gpu"} == {"skipped"}
    celery = _celery_results(cfg, secrets, run_id)
    assert sorted(celery) == list(range(len(groups))), "a task has no Celery result: it did not run on Celery"
    worker = cfg.worker_name.replace("%h", socket.gethostname())
    assert all(status == "SUCCESS" and node == worker for status, node, _ in celery.values()), celery

    # the published run
    published = client.get(f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/publish/xcomEntries/return_value"
                           "?deserialize=true")["value"]  # fmt: skip
    out_dir = Path(published["out_dir"])
    assert out_dir.is_relative_to(cfg.output_dir)
    assert (out_dir.parent / "latest").resolve() == out_dir.resolve()
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["total_cells"] == 700 and len(manifest["shards"]) == n
    merged = client.get(f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/merge/xcomEntries/return_value"
                        "?deserialize=true")["value"]  # fmt: skip
    assert merged["shards"] == n and merged["total_cells"] == 700  # the count, not the outputs' file pattern
    assert sorted(s["index"] for s in manifest["shards"]) == list(range(n))
    assert manifest["quality"]["passed"] and manifest["fixture"] is True
    loads = {s["index"]: s["model_load_seconds"] > 0 for s in manifest["shards"]}
    assert [loads[g[0]] for g in groups] == [True] * len(groups)  # the first shard of each group loaded it ...
    assert not any(loads[i] for g in groups for i in g[1:])  # ... and only that one
    for i in range(n):
        assert (out_dir / "shards" / f"{i}.npy").is_file()
    assert (out_dir / "report.html").is_file()

    # the same input through `helical-airflow run`, in another output root: same run key, same numbers
    direct_root = tmp_path / "direct"
    done = subprocess.run(
        [sys.executable, "-m", "helical_airflow.cli", "run", str(cfg.data_dir / "sample.h5ad"), "--model", "geneformer",
         "--shard-size", str(SHARD_SIZE), "--device", "cpu", "--cache-dir", fixture_cache, "--out", str(direct_root)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    direct = direct_root / "sample" / out_dir.name
    assert direct.is_dir(), f"the direct run used another run key: {list((direct_root / 'sample').iterdir())}"
    import anndata as ad

    ours, theirs = ad.read_h5ad(out_dir / "embeddings.h5ad"), ad.read_h5ad(direct / "embeddings.h5ad")
    key = next(iter(ours.obsm))
    assert ours.obsm[key].shape[0] == 700
    np.testing.assert_allclose(ours.obsm[key], theirs.obsm[key], rtol=1e-5, atol=1e-6)
    assert list(ours.obs_names) == list(theirs.obs_names)

    # a second trigger reuses every finished shard (nothing is re-embedded, files untouched)
    first = _shard_results(client, run_id, len(groups))
    assert sorted(r["index"] for r in first) == list(range(n)) and not any(r["reused"] for r in first)
    mtimes = {i: os.stat(out_dir / "shards" / f"{i}.npy").st_mtime_ns for i in range(n)}
    again = client.trigger(DAG, CONF)
    assert client.wait_for_run(DAG, again, timeout_s=600)["state"] == "success"
    assert all(r["reused"] for r in _shard_results(client, again, len(_groups(client, again))))
    assert {i: os.stat(out_dir / "shards" / f"{i}.npy").st_mtime_ns for i in range(n)} == mtimes


def test_a_file_dropped_in_incoming_triggers_the_workflow(stack: Stack) -> None:
    cfg, client, _ = stack
    incoming = cfg.data_dir / "incoming"
    incoming.mkdir(exist_ok=True)
    part = incoming / "dropped.h5ad.part"
    shutil.copy(cfg.data_dir / "sample.h5ad", part)
    part.rename(incoming / "dropped.h5ad")  # complete files appear atomically
    deadline = time.monotonic() + 300
    runs: list[dict] = []
    while time.monotonic() < deadline and not runs:
        time.sleep(3)
        listed = client.get(f"/dags/{DAG}/dagRuns?limit=100")["dag_runs"]
        runs = [r for r in listed if (r.get("conf") or {}).get("input_path") == "incoming/accepted/dropped.h5ad"]
    assert runs, "no workflow run was triggered for the dropped file"
    assert not (incoming / "dropped.h5ad").exists() and (incoming / "accepted" / "dropped.h5ad").is_file()
    run = client.wait_for_run(DAG, runs[0]["dag_run_id"], timeout_s=900)
    assert run["state"] == "success"
    assert (cfg.output_dir / "dropped" / "latest" / "embeddings.h5ad").is_file()


#: a family other than Geneformer, through the same DAG and Celery worker
OTHER_FAMILY = "uce"


def test_another_family_runs_through_the_celery_worker(stack: Stack) -> None:
    cfg, client, _ = stack
    run_id = client.trigger(DAG, {**CONF, "model": OTHER_FAMILY, "shard_size": 350})
    run = client.wait_for_run(DAG, run_id, timeout_s=900)
    tis = client.task_instances(DAG, run_id)
    assert run["state"] == "success", [(t["task_id"], t["map_index"], t["state"]) for t in tis]
    published = client.get(f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/publish/xcomEntries/return_value"
                           "?deserialize=true")["value"]  # fmt: skip
    manifest = json.loads((Path(published["out_dir"]) / "manifest.json").read_text())
    assert manifest["model_family"] == OTHER_FAMILY and manifest["total_cells"] == 700 and manifest["fixture"]
    import anndata as ad

    embeddings = ad.read_h5ad(Path(published["out_dir"]) / "embeddings.h5ad").obsm[f"X_{OTHER_FAMILY}"]
    assert embeddings.shape[0] == 700 and np.isfinite(embeddings).all()


SAMPLE_DNA = Path(__file__).resolve().parents[2] / "data" / "sample_dna.fa"
SEQUENCE_FAMILY = "hyena_dna"  # runs on CPU, with an offline fixture
SEQ_SHARD_SIZE = 16  # 40 records -> 3 shards


def _fasta_records(path: Path) -> list[tuple[str, str]]:
    return [(block.splitlines()[0].split()[0], "".join(block.splitlines()[1:]))
            for block in path.read_text().split(">")[1:]]  # fmt: skip


def _failed_logs(cfg: StackConfig, client: AirflowClient, run_id: str) -> str:
    """The task states and the tail of each failed task's log, for an assertion message."""
    tis = client.task_instances(DAG, run_id)
    out = [str([(t["task_id"], t["map_index"], t["state"]) for t in tis])]
    logs = cfg.airflow_home / "logs" / f"dag_id={DAG}" / f"run_id={run_id}"
    for t in tis:
        if t["state"] in ("failed", "up_for_retry"):
            for path in sorted(logs.glob(f"task_id={t['task_id']}/**/*.log")):
                out.append(f"--- {path.relative_to(logs)}\n{path.read_text()[-4000:]}")
    return "\n".join(out)


def _published(client: AirflowClient, run_id: str) -> Path:
    return Path(client.get(f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/publish/xcomEntries/return_value"
                           "?deserialize=true")["value"]["out_dir"])  # fmt: skip


def test_a_fasta_runs_through_the_celery_worker_and_equals_a_direct_run(
    stack: Stack, fixture_cache: str, tmp_path: Path
) -> None:
    """A sequence input (FASTA) through the DAG, with the sequence Params sent over the REST API: too_long for the
    FASTA, sequence_column / id_column for a table of the same records."""
    import anndata as ad
    import pyarrow.parquet as pq

    from helical_airflow.models import registry

    cfg, client, _ = stack
    shutil.copy(SAMPLE_DNA, cfg.data_dir / SAMPLE_DNA.name)
    records = _fasta_records(SAMPLE_DNA)
    conf = {**CONF, "input_path": SAMPLE_DNA.name, "model": SEQUENCE_FAMILY, "shard_size": SEQ_SHARD_SIZE,
            "too_long": "truncate"}  # fmt: skip
    run_id = client.trigger(DAG, conf)
    # a table with other column names: the sequence_column / id_column Params (one shard), run alongside
    rows = records[:6]
    (cfg.data_dir / "genes.csv").write_text("gene,seq\n" + "".join(f"{i},{s}\n" for i, s in rows))
    table_run = client.trigger(DAG, {**conf, "input_path": "genes.csv", "sequence_column": "seq",
                                     "id_column": "gene", "shard_size": 100})  # fmt: skip
    run = client.wait_for_run(DAG, run_id, timeout_s=900)
    assert run["state"] == "success", _failed_logs(cfg, client, run_id)
    tis = client.task_instances(DAG, run_id)
    n = -(-len(records) // SEQ_SHARD_SIZE)
    groups = _groups(client, run_id)
    assert n >= 2 and sorted(i for g in groups for i in g) == list(range(n))
    tasks = [t for t in tis if t["task_id"] == "embed_shard"]
    assert tasks and all(t["state"] == "success" and t["queue"] == "default" for t in tasks)

    out_dir = _published(client, run_id)
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["model_family"] == SEQUENCE_FAMILY and manifest["fixture"] is True
    assert manifest["total_cells"] == len(records) and len(manifest["shards"]) == n  # total_cells counts records
    sequence = manifest["input"]["sequence"]
    assert sequence["format"] == "fasta" and sequence["too_long"] == "truncate"
    assert sequence["total_nucleotides"] == sum(len(s) for _, s in records)
    assert manifest["params"]["options"]["too_long"] == "truncate"  # the Param reached the model options
    key = f"X_{SEQUENCE_FAMILY}"
    ours = ad.read_h5ad(out_dir / "embeddings.h5ad")
    assert list(ours.obs["id"]) == [i for i, _ in records]  # input order
    assert ours.obsm[key].shape[0] == len(records) and np.isfinite(ours.obsm[key]).all()
    table = pq.read_table(out_dir / "embeddings.parquet")
    assert table.column("id").to_pylist() == [i for i, _ in records]
    assert (out_dir / "report.html").is_file()

    # the same file through `helical-airflow run`: same run key (the Param is the CLI's option), same numbers
    direct_root = tmp_path / "direct"
    done = subprocess.run(
        [sys.executable, "-m", "helical_airflow.cli", "run", str(cfg.data_dir / SAMPLE_DNA.name), "--model",
         SEQUENCE_FAMILY, "--shard-size", str(SEQ_SHARD_SIZE), "--device", "cpu", "--too-long", "truncate",
         "--cache-dir", fixture_cache, "--out", str(direct_root)],
        capture_output=True, text=True, timeout=900, env={**os.environ, "HELICAL_AIRFLOW_REPORT_UMAP": "0"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    direct = direct_root / out_dir.parent.name / out_dir.name
    assert direct.is_dir(), f"the direct run used another run key: {list(direct_root.glob('*/*'))}"
    theirs = ad.read_h5ad(direct / "embeddings.h5ad")
    assert list(theirs.obs["id"]) == list(ours.obs["id"])
    atol = registry.FAMILIES[SEQUENCE_FAMILY].shard_atol
    np.testing.assert_allclose(ours.obsm[key], theirs.obsm[key], atol=atol, rtol=0)

    # the table's run
    assert client.wait_for_run(DAG, table_run, timeout_s=600)["state"] == "success", _failed_logs(cfg, client,
                                                                                                table_run)  # fmt: skip
    table_out = ad.read_h5ad(_published(client, table_run) / "embeddings.h5ad")
    assert list(table_out.obs["id"]) == [i for i, _ in rows]
    np.testing.assert_allclose(table_out.obsm[key], ours.obsm[key][: len(rows)], atol=1e-5, rtol=0)


FINETUNE_DAG = "helical_finetune"
#: a tiny training: 3 epochs over 96 of the sample's cells, batches of 8 (12 steps per epoch)
FINETUNE = {"input_path": "sample.h5ad", "model": "geneformer", "label_key": "cell_type", "epochs": 3,
            "learning_rate": 1e-3, "max_train_cells": 96, "validation_fraction": 0.3, "patience": 5,
            "device": "cpu", "shard_size": 350, "batch_size": 8, "seed": 0}  # fmt: skip


def _kill_the_train_task_after_epoch_1(cfg: StackConfig, client: AirflowClient, run_id: str) -> None:
    """SIGKILL the train task's process (the task runner's child, titled `airflow worker -- <ti id>`) as soon as
    epoch 1's checkpoint is on disk, i.e. during epoch 2."""
    import signal

    finetuned = cfg.output_dir / "sample" / "finetune" / "cell_type"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and not list(finetuned.glob(".work-*/checkpoint.pt")):
        time.sleep(0.1)
    assert list(finetuned.glob(".work-*/checkpoint.pt")), _failed_logs(cfg, client, run_id)
    (train,) = [t for t in client.task_instances(FINETUNE_DAG, run_id) if t["task_id"] == "train"]
    assert train["state"] == "running", train
    title = f"-- {train['id']}"
    victims = [p for p in psutil.process_iter(["cmdline"]) if title in " ".join(p.info["cmdline"] or [])]
    assert victims, f"no process titled {title!r}"
    for proc in victims:
        proc.send_signal(signal.SIGKILL)


def test_finetune_killed_mid_epoch_resumes_registers_and_annotates_through_the_dags(
    stack: Stack, fixture_cache: str, tmp_path: Path
) -> None:
    """Train -> register -> annotate through the two DAGs on the stack's real MLflow server; the train task is
    SIGKILLed during epoch 2, its retry resumes from the checkpoint and ends with the weights of an undisturbed
    `helical-airflow finetune` of the same Params."""
    import anndata as ad
    import torch

    cfg, client, _ = stack
    run_id = client.trigger(FINETUNE_DAG, FINETUNE)
    _kill_the_train_task_after_epoch_1(cfg, client, run_id)
    run = client.wait_for_run(FINETUNE_DAG, run_id, timeout_s=900)
    tis = {t["task_id"]: t for t in client.task_instances(FINETUNE_DAG, run_id) if t["map_index"] in (-1, None)}
    assert run["state"] == "success", [(t["task_id"], t["state"]) for t in tis.values()]
    assert tis["train"]["try_number"] >= 2, tis["train"]  # the kill cost one try; the retry finished
    logs = cfg.airflow_home / "logs" / f"dag_id={FINETUNE_DAG}" / f"run_id={run_id}" / "task_id=train"
    retried = "".join(p.read_text() for p in logs.glob("**/attempt=[2-9]*.log"))
    assert "resuming fine-tuning after epoch" in retried, retried[-3000:]  # resumed, not started over
    record = client.get(f"/dags/{FINETUNE_DAG}/dagRuns/{run_id}/taskInstances/register/xcomEntries/return_value"
                        "?deserialize=true")["value"]  # fmt: skip
    assert record["status"] == "registered" and record["name"] == "helical-geneformer-cell_type", record
    folder = Path(record["folder"])
    history = json.loads((folder / "finetune.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]

    # the same Params through the CLI, undisturbed, untracked: identical weights
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    options = ["--label-key", "cell_type", "--model", "geneformer", "--epochs", "3", "--learning-rate", "1e-3",
               "--max-train-cells", "96", "--validation-fraction", "0.3", "--patience", "5", "--device", "cpu",
               "--shard-size", "350", "--batch-size", "8", "--seed", "0"]  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "helical_airflow.cli", "finetune", str(cfg.data_dir / "sample.h5ad"),
                           *options, "--cache-dir", fixture_cache, "--out", str(tmp_path / "direct")],
                          capture_output=True, text=True, timeout=900, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (straight,) = (tmp_path / "direct" / "sample" / "finetune" / "cell_type").glob(f"{folder.name}")
    a = torch.load(folder / "model.pt", weights_only=True)
    b = torch.load(straight / "model.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    # annotate the sample through the workflow DAG with the registered model
    conf = {**CONF, "annotate_classifier": f"models:/{record['name']}@champion", "label_key": "cell_type"}
    query = client.trigger(DAG, conf)
    assert client.wait_for_run(DAG, query, timeout_s=900)["state"] == "success", _failed_logs(cfg, client, query)
    annotated = client.get(f"/dags/{DAG}/dagRuns/{query}/taskInstances/annotate/xcomEntries/return_value"
                           "?deserialize=true")["value"]  # fmt: skip
    assert annotated["mode"] == "classifier", annotated
    table = ad.read_h5ad(annotated["annotations"])
    assert table.n_obs == 700 and "predicted_cell_type" in table.obs
    assert sum(annotated["predicted_counts"].values()) == 700


COMPARE_DAG = "helical_model_comparison"


def test_the_comparison_dag_runs_the_workflow_per_model_and_ranks_them(stack: Stack) -> None:
    """helical_model_comparison: one helical_model_workflow run per model (deferrable trigger, waited on in the
    triggerer), then scib-metrics on the same cells: one row per model plus PCA, finite, ranked; a tracked parent
    run in the stack's MLflow."""
    cfg, client, _ = stack
    conf = {"input_path": "sample.h5ad", "models": ["geneformer", "genept"], "label_key": "cell_type",
            "shard_size": SHARD_SIZE, "device": "cpu"}  # fmt: skip
    run_id = client.trigger(COMPARE_DAG, conf)
    run = client.wait_for_run(COMPARE_DAG, run_id, timeout_s=900)
    tis = client.task_instances(COMPARE_DAG, run_id)
    assert run["state"] == "success", [(t["task_id"], t["map_index"], t["state"]) for t in tis]
    triggered = [t for t in tis if t["task_id"] == "embed_each_model"]
    assert sorted(t["map_index"] for t in triggered) == [0, 1] and all(t["state"] == "success" for t in triggered)
    scored = client.get(f"/dags/{COMPARE_DAG}/dagRuns/{run_id}/taskInstances/score_comparison/xcomEntries/"
                        "return_value?deserialize=true")["value"]  # fmt: skip
    result = json.loads((Path(scored["out_dir"]) / "comparison.json").read_text())
    names = [row["name"] for row in result["rows"]]
    assert sorted(names) == sorted(["geneformer", "genept", "PCA"]) and names == scored["ranked"]
    assert [row["rank"] for row in result["rows"]] == [1, 2, 3]
    totals = [row["total"] for row in result["rows"]]
    assert all(np.isfinite(totals)) and totals == sorted(totals, reverse=True)
    assert result["scored_cells"] > 0 and result["fixture"] is True
    assert (Path(scored["out_dir"]) / "comparison.html").is_file()
    assert result["tracking"]["status"] == "tracked", result["tracking"]  # the parent run, in the stack's MLflow
    for row in result["rows"]:
        if row["name"] != "PCA":  # each model's run is a workflow run's published folder
            assert (Path(row["run_dir"]) / "manifest.json").is_file()
