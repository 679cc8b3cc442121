"""DAG integrity: every DAG imports (without helical or torch), has owners, retries, tags and timeouts,
routes shards to the queue and pool of each model's profile, and its Params reject bad input."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("airflow")

from airflow.dag_processing.dagbag import DagBag  # noqa: E402
from airflow.sdk.exceptions import ParamValidationError  # noqa: E402

from helical_airflow import settings  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "airflow" / "dags"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def dagbag(data_dir: Path) -> DagBag:
    os.environ["HELICAL_AIRFLOW_DATA_DIR"] = str(data_dir)  # the DAG builds its path rule from it
    settings.reload()
    try:
        return DagBag(str(DAGS))
    finally:
        os.environ.pop("HELICAL_AIRFLOW_DATA_DIR", None)
        settings.reload()


def test_dags_import_without_errors(dagbag: DagBag) -> None:
    assert dagbag.import_errors == {}
    assert {"helical_model_workflow", "helical_incoming_watcher"} <= set(dagbag.dags)


def test_parsing_never_imports_helical_or_torch() -> None:
    """What the scheduler and DAG processor import must stay light: checked in a fresh interpreter."""
    code = (
        "import sys, json\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag({str(DAGS)!r})\n"
        "print(json.dumps({'errors': list(bag.import_errors), 'dags': sorted(bag.dags),"
        " 'heavy': sorted(m for m in ('helical', 'torch', 'transformers') if m in sys.modules)}))\n"
    )
    env = {**os.environ, "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["errors"] == [] and "helical_model_workflow" in result["dags"]
    assert result["heavy"] == []


def test_every_task_has_owner_retries_and_timeout(dagbag: DagBag) -> None:
    for dag in dagbag.dags.values():
        assert dag.tags, f"{dag.dag_id} has no tags"
        for task in dag.tasks:
            where = f"{dag.dag_id}.{task.task_id}"
            assert task.owner not in ("", "airflow"), f"{where} has no owner"
            assert task.retries >= 1, f"{where} has no retries"
            assert task.execution_timeout is not None, f"{where} has no execution timeout"
            if task.retries:
                assert task.retry_exponential_backoff, f"{where} retries without backoff"


def test_workflow_shape(dagbag: DagBag) -> None:
    dag = dagbag.dags["helical_model_workflow"]
    assert dag.schedule is None or str(dag.timetable.summary).lower() in ("none", "never")
    chain = ["validate_input", "plan_shards", "route_to_queue", "embed_shard", "merge", "quality_gate", "publish"]
    for upstream, downstream in zip(chain, chain[1:], strict=False):
        assert downstream in dag.get_task(upstream).downstream_task_ids, f"{upstream} -> {downstream}"
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    assert isinstance(dag.get_task("embed_shard"), MappedOperator)  # one task instance per shard


def test_each_models_queue_and_pool_has_an_embed_task(dagbag: DagBag) -> None:
    from helical_airflow.models import MODELS

    dag = dagbag.dags["helical_model_workflow"]
    embed = {(t.queue, t.pool) for t in dag.tasks if t.task_id.startswith("embed_shard")}
    needed = {(spec.profile.queue, spec.profile.pool) for spec in MODELS.values()}
    assert needed <= embed
    assert ("gpu", "gpu_pool") in embed  # GPU models exist in the table and go to the gpu queue
    assert dag.get_task("embed_shard").queue == "default"


def test_predictions_follow_the_models_queue_and_pool_like_the_embed_task(dagbag: DagBag) -> None:
    """One predict task per (queue, pool) of the model table, each behind route_to_queue (which follows the embed
    and predict tasks of the model's route, skipping the others) and before annotate; a GPU model's predictions run
    on the gpu queue, with the on_kill that stops what they launched."""
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    from helical_airflow.launchers.lifecycle import EmbedShardOperator
    from helical_airflow.models import MODELS

    dag = dagbag.dags["helical_model_workflow"]
    predict = {t.task_id: t for t in dag.tasks if t.task_id.startswith("predict_shards")}
    routes = {(spec.profile.queue, spec.profile.pool) for spec in MODELS.values()}
    assert {(t.queue, t.pool) for t in predict.values()} == routes and len(predict) == len(routes)
    assert (predict["predict_shards"].queue, predict["predict_shards_gpu"].queue) == ("default", "gpu")
    assert predict["predict_shards_gpu"].pool == "gpu_pool"
    route = dag.get_task("route_to_queue")
    for task in predict.values():
        assert isinstance(task, MappedOperator) and issubclass(task.operator_class, EmbedShardOperator)
        assert task.task_id in route.downstream_task_ids and "plan_annotation" in task.upstream_task_ids
        assert task.downstream_task_ids == {"annotate"}
    # the branch names the embed and predict task of the model's route (what it returns is what runs)
    chosen = route.python_callable("gpu")  # type: ignore[attr-defined]
    assert chosen == ["embed_shard_gpu", "predict_shards_gpu"] and set(chosen) <= set(dag.task_ids)


def _valid(dag, **conf: object) -> None:  # type: ignore[no-untyped-def]
    """What a trigger does with its conf: set each value on a copy of the DAG's Params, then validate all."""
    params = copy.deepcopy(dag.params)
    for key, value in conf.items():
        params[key] = value
    params.validate()


def test_params_accept_defaults_and_paths_inside_the_data_folder(dagbag: DagBag, data_dir: Path) -> None:
    dag = dagbag.dags["helical_model_workflow"]
    _valid(dag)
    _valid(dag, input_path="incoming/accepted/pbmc.h5ad", model="scgpt", shard_size=5, launcher="docker")
    _valid(dag, input_path=f"{data_dir}/sub/x.h5ad", precision="bf16", engine="fast", batch_size=8)
    _valid(dag, memory_cap_gb=2.5, seed=2**32 - 1)
    for name in ("sample_dna.fa", "a.fasta.gz", "sub/b.fna", "t.csv", "t.tsv", "t.parquet"):  # sequence models
        _valid(dag, input_path=name, model="hyena_dna", sequence_column="seq", too_long="window")


@pytest.mark.parametrize(
    "conf",
    [
        {"model": "no-such-model"},
        {"input_path": "/etc/passwd.h5ad"},
        {"input_path": "../outside.h5ad"},
        {"input_path": "ok/../../outside.h5ad"},
        {"input_path": "sample.txt"},
        {"input_path": "sample.csv.gz"},
        {"too_long": "drop"},
        {"shard_size": 0},
        {"device": "tpu"},
        {"launcher": "ssh"},
        {"precision": "int8"},
        {"seed": 2**32},  # numpy's seeds are 32-bit: refused at trigger, not in all 3 embed attempts
        {"memory_cap_gb": 0},
    ],
)
def test_params_reject(dagbag: DagBag, conf: dict[str, object]) -> None:
    dag = dagbag.dags["helical_model_workflow"]
    with pytest.raises(ParamValidationError):
        _valid(dag, **conf)


def test_model_param_lists_exactly_the_model_table(dagbag: DagBag) -> None:
    from helical_airflow.models import MODELS

    schema = dagbag.dags["helical_model_workflow"].params.get_param("model").schema
    assert schema["enum"] == list(MODELS)
    for name, param in dagbag.dags["helical_model_workflow"].params.items():
        assert param.description, f"param {name} has no description"


def test_comparison_dag_plans_then_runs_the_workflow_per_model_then_scores(dagbag: DagBag, data_dir: Path) -> None:
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    from helical_airflow.models import MODELS

    dag = dagbag.dags["helical_model_comparison"]
    assert dag.schedule is None or str(dag.timetable.summary).lower() in ("none", "never")
    chain = ["plan_comparison", "embed_each_model", "score_comparison"]
    for upstream, downstream in zip(chain, chain[1:], strict=False):
        assert downstream in dag.get_task(upstream).downstream_task_ids, f"{upstream} -> {downstream}"
    embed = dag.get_task("embed_each_model")
    assert isinstance(embed, MappedOperator)  # one workflow run per model, on that model's queue and pool
    assert embed.partial_kwargs["trigger_dag_id"] == "helical_model_workflow"
    assert dag.params.get_param("models").schema["items"]["enum"] == list(MODELS)
    for name, param in dag.params.items():
        assert param.description, f"param {name} has no description"
    _valid(dag)
    _valid(dag, input_path=f"{data_dir}/sub/x.h5ad", models=["geneformer", "scgpt", "uce"], label_key="cell_type",
           batch_key="donor", max_cells=500, device="cpu", seed=3, shard_size=100)  # fmt: skip
    for conf in ({"models": []}, {"models": ["no-such-model"]}, {"models": ["scgpt", "scgpt"]}, {"models": "scgpt"},
                 {"max_cells": 10}, {"input_path": "../outside.h5ad"}, {"seed": 2**32}, {"device": "tpu"}):  # fmt: skip
        with pytest.raises(ParamValidationError):
            _valid(dag, **conf)
