"""One MLflow version everywhere: the client (mlflow-skinny, pinned in pyproject's `tracking` extra), the compose
stack's server image, and the local stack's server (.venv-mlflow, scripts/install_mlflow_server.sh)."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

from helical_airflow.stack import mlflow as stack_mlflow

REPO = Path(__file__).resolve().parents[2]


def _pinned_client() -> str:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    (pin,) = [dep for dep in extras["tracking"] if dep.startswith("mlflow-skinny")]
    match = re.fullmatch(r"mlflow-skinny==([\w.]+)", pin)
    assert match, f"the MLflow client must be pinned exactly (==), got {pin!r}"
    return match.group(1)


def test_compose_server_image_is_the_client_version() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    image = compose["services"]["mlflow"]["image"]
    assert image == f"ghcr.io/mlflow/mlflow:v{_pinned_client()}"
    assert version("mlflow-skinny") == _pinned_client()


def test_local_server_is_the_client_version() -> None:
    binary = stack_mlflow.server_binary()
    if binary is None:
        pytest.skip(f"the MLflow server is not installed ({stack_mlflow.INSTALL_HINT})")
    assert stack_mlflow.server_version(binary) == _pinned_client()
