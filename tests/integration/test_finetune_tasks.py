"""The fine-tuning DAG's steps (helical_airflow.finetune_tasks) in order, as the DAG's tasks call them, on the fixture
model (real helical code, tiny random weights): the mapped tokenise tasks write the token folders the training
then reads instead of tokenising again, every epoch's metrics reach a StatsD listener under names the mapping file
turns into helical_finetune_*, evaluate scores against the majority class, register without a server says so, and
bad input fails the task at once with its code. Then the workflow DAG's annotation steps predict a query's shards
with the trained folder and merge them into annotations.h5ad; without the annotate_* Params they do nothing."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import anndata as ad
import pytest

pytest.importorskip("airflow", reason="Airflow comes with the airflow extra: ./setup_helical_env.sh")

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException  # noqa: E402

from helical_airflow import airflow_tasks, finetune_tasks  # noqa: E402
from helical_airflow.pipeline import run_plan  # noqa: E402
from helical_airflow.plan import load_plan  # noqa: E402
from helical_airflow.statsd_bridge.mapping import Mapper  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def test_the_dag_steps_train_from_the_mapped_tokens_and_send_epoch_metrics(
    sample_h5ad: Path, fixture_cache: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(sample_h5ad, data / "sample.h5ad")
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(5)
    for name, value in {"HELICAL_AIRFLOW_DATA_DIR": str(data), "HELICAL_AIRFLOW_OUTPUT_DIR": str(tmp_path / "out"),
                        "HELICAL_AIRFLOW_CACHE_DIR": fixture_cache, "HELICAL_AIRFLOW_STATSD_HOST": "127.0.0.1",
                        "HELICAL_AIRFLOW_STATSD_PORT": str(listener.getsockname()[1])}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = {"input_path": "sample.h5ad", "model": "geneformer", "label_key": "cell_type", "epochs": 2,
              "learning_rate": 1e-3, "max_train_cells": 24, "validation_fraction": 0.3, "patience": 5,
              "device": "cpu", "shard_size": 350, "batch_size": 16, "seed": 0}  # fmt: skip

    validated = finetune_tasks.validate(params)
    assert sum(validated["classes"].values()) > 0
    planned = finetune_tasks.plan(params, validated)
    assert planned["shards"] == [0, 1] and not planned["done"] and (planned["queue"], planned["pool"]) == (
        "default", "default_pool")  # fmt: skip
    tokenised = [finetune_tasks.tokenise_shard(params, planned, shard) for shard in planned["shards"]]
    tokens = Path(tokenised[0]["tokens"])
    written = sorted(p.relative_to(tokens).as_posix() for p in tokens.glob("*/*/rows.json"))
    assert written, tokenised
    stamps = {p: p.stat().st_mtime_ns for p in tokens.glob("*/*/rows.json")}

    trained = finetune_tasks.train(params, planned)
    assert trained["folder"] == planned["folder"] and trained["epochs_run"] == 2
    # the training read the mapped tasks' tokens: none was written again (the work folder is gone once done)
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items() if p.exists()) or not tokens.exists()

    mapper = Mapper.from_file(REPO / "monitoring" / "statsd" / "mapping.yml")
    received: dict[str, dict[str, str]] = {}
    while len(received) < 16:  # 8 gauges per epoch, 2 epochs
        for line in listener.recv(65536).decode().splitlines():
            name, _, rest = line.partition(":")
            match = mapper.lookup(name, "gauge")
            assert match is not None and rest.endswith("|g"), line
            received[f"{match.name}@{match.labels.get('finetune_key')}#{len(received)}"] = match.labels
    names = {k.split("@")[0] for k in received}
    assert {"helical_finetune_epoch_seconds", "helical_finetune_train_cells_per_second", "helical_finetune_train_loss",
            "helical_finetune_val_accuracy", "helical_finetune_epochs_since_best"} <= names  # fmt: skip
    assert {labels["finetune_key"] for labels in received.values()} == {planned["finetune_key"]}

    evaluated = finetune_tasks.evaluate(trained["folder"])
    assert 0 < evaluated["majority_class_rate"] < 1 and evaluated["epochs_run"] == 2 and evaluated["fixture"]
    assert finetune_tasks.register(trained["folder"]) == {"folder": trained["folder"], "status": "untracked"}
    # a second trigger of the same Params: the folder is done, nothing is tokenised or trained again
    again = finetune_tasks.plan(params, validated)
    assert again["done"] and finetune_tasks.tokenise_shard(params, again, 0)["skipped"]

    # the workflow DAG's annotation steps with this model folder (annotate_classifier) on a 60-cell query
    query = ad.read_h5ad(sample_h5ad)[:60].copy()
    query.write_h5ad(data / "query.h5ad")
    folder = Path(trained["folder"]).relative_to(tmp_path / "out")
    wparams = {"input_path": "query.h5ad", "model": "geneformer", "shard_size": 30, "device": "cpu", "seed": 0,
               "launcher": "local", "label_key": "cell_type", "annotate_classifier": str(folder),
               "annotate_confidence_threshold": 0.0}  # fmt: skip
    planned_w = airflow_tasks.plan_shards(wparams, airflow_tasks.validate_input(wparams))
    run_plan(load_plan(planned_w["plan_path"]))  # what embed_shard -> merge -> quality_gate -> publish leave behind
    groups = airflow_tasks.plan_annotation(wparams, planned_w["plan_path"])
    assert sorted(i for g in groups for i in g["shards"]) == [0, 1]
    for group in groups:
        assert group["classifier"] == str((tmp_path / "out" / folder).resolve())  # a folder is its own pinned source
        assert all(not p["reused"] for p in airflow_tasks.predict_shards(wparams, group["plan_path"], group["shards"],
                                                                          group["classifier"]))  # fmt: skip
    annotated = airflow_tasks.annotate_query(wparams, planned_w["plan_path"], groups)
    assert annotated["mode"] == "classifier" and sum(annotated["predicted_counts"].values()) == 60
    table = ad.read_h5ad(annotated["annotations"])
    assert table.n_obs == 60 and set(table.obs["predicted_cell_type"]) <= set(validated["classes"])
    # without the annotate_* Params: nothing to plan, and the annotate task skips (the run as before)
    plain = {k: v for k, v in wparams.items() if not k.startswith("annotate_")}
    assert airflow_tasks.plan_annotation(plain, planned_w["plan_path"]) == []
    with pytest.raises(AirflowSkipException):
        airflow_tasks.annotate_query(plain, planned_w["plan_path"])
    with pytest.raises(AirflowFailException, match="E804|E806"):  # checked before anything is embedded
        airflow_tasks.validate_input({**wparams, "annotate_classifier": "sample/finetune/cell_type/no_such_key"})
    with pytest.raises(AirflowFailException, match="E822"):
        airflow_tasks.validate_input({**wparams, "annotate_classifier": "/etc"})

    with pytest.raises(AirflowFailException, match="E701"):  # a user error: no retry
        finetune_tasks.validate({**params, "label_key": "no_such_column"})
    with pytest.raises(AirflowFailException, match="E821"):
        finetune_tasks.validate({**params, "epochs": 0})
    listener.close()
