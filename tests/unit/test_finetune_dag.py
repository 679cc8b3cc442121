"""The fine-tuning DAG (airflow/dags/helical_finetune.py) parses, has the issue's steps, and its trigger form is
generated from FineTuneParams: at every bound and choice the form accepts what the library accepts."""

from __future__ import annotations

import copy
import importlib
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

pytest.importorskip("airflow", reason="Airflow comes with the airflow extra: ./setup_helical_env.sh")

from airflow.sdk.exceptions import ParamValidationError  # noqa: E402

from helical_airflow import dag_params  # noqa: E402
from helical_airflow.finetune_spec import FineTuneParams  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dag() -> Any:
    sys.path.insert(0, str(REPO / "airflow" / "dags"))
    try:
        return importlib.import_module("helical_finetune").dag
    finally:
        sys.path.remove(str(REPO / "airflow" / "dags"))


@pytest.fixture(scope="module")
def form() -> dict[str, Any]:
    return dag_params.finetune_form("/srv/data", ["geneformer", "gf-6L-10M-i2048"], "geneformer")


def form_accepts(param: Any, value: object) -> bool:
    try:
        copy.deepcopy(param).resolve(value)
    except ParamValidationError:
        return False
    return True


def library_accepts(name: str, value: object) -> bool:
    try:
        FineTuneParams(**{"model": "geneformer", "label_key": "cell_type", name: value})
    except ValidationError:
        return False
    return True


def test_the_dag_has_the_issues_steps_in_order(dag: Any) -> None:
    ids = {t.task_id: t for t in dag.tasks}
    assert {"validate", "plan", "tokenise_shard", "route_to_queue", "train", "train_gpu", "evaluate",
            "register"} <= set(ids)  # fmt: skip
    assert ids["plan"].upstream_task_ids == {"validate"}
    assert ids["tokenise_shard"].upstream_task_ids == {"plan"}
    assert {"tokenise_shard"} <= ids["route_to_queue"].upstream_task_ids
    assert (ids["train"].queue, ids["train"].pool) == ("default", "default_pool")
    assert (ids["train_gpu"].queue, ids["train_gpu"].pool) == ("gpu", "gpu_pool")
    assert ids["train"].retries >= 1  # a killed training resumes from its checkpoint on the retry
    assert {"train", "train_gpu"} <= ids["evaluate"].upstream_task_ids
    assert ids["register"].upstream_task_ids == {"evaluate"}
    assert [o.name for o in ids["register"].outlets] == ["helical_finetuned_models"]
    assert set(dag.params) == {"input_path", *dag_params.FINETUNE_PARAM_NAMES}


@pytest.mark.parametrize("name", list(dag_params.FINETUNE_WORDS))
def test_the_form_accepts_what_fine_tuning_accepts(form: dict[str, Any], name: str) -> None:
    schema = dag_params.finetune_schema_of(name)
    probes: list[object] = ["bogus", *schema.get("enum", [])]
    for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        if key in schema:
            probes += [schema[key] - 1, schema[key], schema[key] + 1, schema[key] - 0.5, schema[key] + 0.5]
    checked = 0
    for value in probes:
        if isinstance(value, float) and schema["type"] == "integer":
            continue  # the form's JSON schema and pydantic agree on 1.5 (refused) but pydantic takes 2.0 as 2
        if name == "shard_size" and isinstance(value, int) and value > 1_000_000:
            continue  # the form's own cap (FORM_ONLY), as the workflow's
        assert form_accepts(form[name], value) == library_accepts(name, value), (name, value)
        checked += 1
    assert checked >= 1
    # the form's default is the library's default
    assert form[name].value == FineTuneParams(model="geneformer", label_key="cell_type").model_dump()[name] or (
        name == "label_key"
    )


def test_the_form_refuses_an_input_outside_the_data_folder_and_a_model_it_cannot_fine_tune(
    form: dict[str, Any],
) -> None:
    assert form_accepts(form["input_path"], "sample.h5ad")
    assert not form_accepts(form["input_path"], "../etc/passwd.h5ad")
    assert form_accepts(form["model"], "gf-6L-10M-i2048")
    assert not form_accepts(form["model"], "scgpt")
    assert not form_accepts(form["label_key"], "")
