"""Fixtures shared by every test directory (keep this small)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def sample_h5ad() -> Path:
    """The real 700-cell PBMC sample shipped in data/ (read it, never write it)."""
    return REPO / "data" / "sample.h5ad"


@pytest.fixture(scope="session")
def fixture_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An offline weights cache of tiny random models, built once per test session; its root as str."""
    from helical_airflow.models.fixture import build_fixture

    out = tmp_path_factory.mktemp("fixture_cache")
    build_fixture(out)
    return str(out)
