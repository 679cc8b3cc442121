"""The DAG's Params are generated from the run's contract: the form accepts what the library accepts, and each
name, bound and choice is written once."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

pytest.importorskip("airflow", reason="Airflow comes with the airflow extra: ./setup_helical_env.sh")

from airflow.sdk.exceptions import ParamValidationError  # noqa: E402

from helical_airflow import airflow_tasks, cli, dag_params  # noqa: E402
from helical_airflow.modality import suffixes  # noqa: E402
from helical_airflow.models.sequence import SEQUENCE_OPTIONS  # noqa: E402
from helical_airflow.spec import DEFAULT_MODEL, RunParams, schema_of  # noqa: E402

DATA = "/srv/data"


@pytest.fixture(scope="module")
def params() -> dict[str, Any]:
    return dag_params.workflow_params(DATA, ["geneformer", "hyena_dna"], ["local", "docker"], "docker")


def form_accepts(param: Any, value: object) -> bool:
    try:
        copy.deepcopy(param).resolve(value)
    except ParamValidationError:
        return False
    return True


def library_accepts(name: str, value: object) -> bool:
    try:
        RunParams(model="geneformer", **{name: value})
    except ValidationError:
        return False
    return True


def probes(name: str) -> list[object]:
    """Values on and around each bound and choice of a RunParams field."""
    schema = schema_of(name)
    found: list[object] = ["bogus", *schema.get("enum", [])]
    for key in ("minimum", "maximum", "exclusiveMinimum"):
        if key in schema:
            found += [schema[key] - 1, schema[key], schema[key] + 1, schema[key] + 0.5]
    return found


@pytest.mark.parametrize("name", [n for n in dag_params.RUN_PARAM_NAMES if n != "model"])
def test_the_form_accepts_what_the_library_accepts(params: dict[str, Any], name: str) -> None:
    form_only = dag_params.FORM_ONLY.get(name, {})
    for value in probes(name):
        if isinstance(value, float) and schema_of(name)["type"] == "integer":
            continue  # the form's JSON schema and pydantic agree on 1.5 (refused) but pydantic takes 2.0 as 2
        expected = library_accepts(name, value)
        assert form_accepts(params[name], value) == expected, (name, value, expected)
    assert params[name].value == RunParams.model_fields[name].default
    for key, bound in form_only.items():  # a bound only the form has: the library takes more
        assert params[name].schema[key] == bound and library_accepts(name, bound + 1)
        assert not form_accepts(params[name], bound + 1)


def test_the_sequence_params_are_the_sequence_models_options(params: dict[str, Any]) -> None:
    names = tuple(option.name for option in SEQUENCE_OPTIONS)
    assert names == cli.SEQUENCE_FLAGS and set(airflow_tasks.SEQUENCE_PARAMS) == set(names)
    assert set(dag_params.SEQUENCE_TITLES) == set(names)
    for option in SEQUENCE_OPTIONS:
        param = params[option.name]
        assert param.value is None and option.default in param.description
        for choice in option.choices:
            assert form_accepts(param, choice)
        assert form_accepts(param, "drop") == (not option.choices)


def test_the_input_path_takes_every_suffix_a_modality_reads(params: dict[str, Any]) -> None:
    param = params["input_path"]
    for suffix in suffixes():
        assert form_accepts(param, f"sub/x{suffix}") and form_accepts(param, f"{DATA}/x{suffix}")
        assert not form_accepts(param, f"../x{suffix}") and not form_accepts(param, f"/etc/x{suffix}")
    for refused in ("x.txt", "x.csv.gz", "x.h5", "x.parquet.gz"):
        assert not form_accepts(param, refused)


def test_defaults_and_bounds_written_once(params: dict[str, Any]) -> None:
    assert params["model"].value == DEFAULT_MODEL == cli.RUN_OPTIONS["model"][1]
    assert params["launcher"].value == "docker" and params["launcher"].schema["enum"] == ["local", "docker"]
    # the CLI's --seed carries the schema's bounds (numpy's seeds are 32-bit)
    assert cli.SeedOpt.__metadata__[0].min == schema_of("seed")["minimum"]
    assert cli.SeedOpt.__metadata__[0].max == schema_of("seed")["maximum"] == 2**32 - 1
