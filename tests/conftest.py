"""Fixtures shared by every test directory (keep this small)."""

from __future__ import annotations

import os
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]

#: set by .ci/run: every skip guard (a missing program or optional package) is a failure there, because CI
#: installs all of them; on a developer's machine without root the same guards skip with the install hint
NO_SKIPS = os.environ.get("HELICAL_AIRFLOW_TESTS_NO_SKIPS") == "1"

#: the report's UMAP costs ~15-20 s of numba compilation in every process that draws one; tests that look at
#: it (tests/integration/test_report.py) switch it back on, every other run's report says it was left out
os.environ.setdefault("HELICAL_AIRFLOW_REPORT_UMAP", "0")


class SettingsMonkeyPatch(pytest.MonkeyPatch):
    """`monkeypatch` whose environment changes reach the package: helical_airflow.settings reads the environment
    once and keeps it, so every setenv/delenv (and the undo at the end of the test) reads it again."""

    def setenv(self, name: str, value: str, prepend: str | None = None) -> None:
        super().setenv(name, value, prepend)
        _reload_settings()

    def delenv(self, name: str, raising: bool = True) -> None:
        super().delenv(name, raising)
        _reload_settings()

    def undo(self) -> None:
        super().undo()
        _reload_settings()


def _reload_settings() -> None:
    from helical_airflow import settings

    settings.reload()


@pytest.fixture
def monkeypatch() -> Generator[pytest.MonkeyPatch, None, None]:
    patch = SettingsMonkeyPatch()
    yield patch
    patch.undo()


@pytest.fixture(autouse=True)
def fresh_settings() -> Generator[None, None, None]:
    """Each test reads the environment as it is when it starts (a module fixture may have set variables)."""
    _reload_settings()
    yield
    _reload_settings()


def _fail_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    if NO_SKIPS and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped, and HELICAL_AIRFLOW_TESTS_NO_SKIPS=1 (CI) makes a skip a failure: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    _fail_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, None]:
    outcome = yield  # a module-level pytest.importorskip skips the whole module here
    _fail_skip(outcome.get_result())


@pytest.fixture(scope="session")
def sample_h5ad() -> Path:
    """The real 700-cell PBMC sample shipped in data/ (read it, never write it)."""
    return REPO / "data" / "sample.h5ad"


@pytest.fixture(scope="session")
def fixture_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An offline weights cache of tiny random models, built once per test session; its root as str.
    HELICAL_AIRFLOW_TEST_FIXTURE_CACHE names one built before (`helical-airflow models fixture --out DIR`) to reuse
    while iterating on a single test (building it takes 1-7 minutes on a loaded 2-core machine); CI never sets it."""
    from helical_airflow.models.fixture import build_fixture

    given = os.environ.get("HELICAL_AIRFLOW_TEST_FIXTURE_CACHE")
    if given and Path(given).is_dir():
        return given
    out = tmp_path_factory.mktemp("fixture_cache")
    build_fixture(out)
    return str(out)


@pytest.fixture(scope="session")
def real_s3_server(tmp_path_factory: pytest.TempPathFactory) -> Generator[Any, None, None]:
    """A real S3 server (SeaweedFS, stack_helpers.real_s3_server) for the whole session, with bucket `helical-test`."""
    from stack_helpers import real_s3_server as start

    with start(tmp_path_factory) as server:
        yield server
