"""One frozen settings object, read once: no other module reads the environment, and every variable is documented."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helical_airflow import settings

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src" / "helical_airflow"
ENV_READ = re.compile(r"\bos\.environ\b|\bgetenv\b|\bos\.putenv\b|\benviron\b")
#: modules that build a child process's environment from a copy of this one's (and read no setting from it)
CHILD_ENV_BUILDERS = {
    "launchers/local.py": re.compile(r"env=\{\*\*os\.environ, "),
    "stack/manager.py": re.compile(r"env=\{\*\*os\.environ, "),
    "stack/process.py": re.compile(r"env=\{\*\*os\.environ, "),
    "stack/runenv.py": re.compile(r"env = \{\*\*os\.environ, "),
}


def test_no_module_but_settings_reads_the_environment() -> None:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel == "settings.py":
            continue
        allowed = CHILD_ENV_BUILDERS.get(rel)
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if ENV_READ.search(line) and not (allowed and allowed.search(line)):
                found.append(f"{rel}:{number}: {line.strip()}")
    assert found == [], "read it through helical_airflow.settings (and document it in VARIABLES):\n" + "\n".join(found)


def test_the_settings_are_read_once_and_frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HELICAL_AIRFLOW_DATA_DIR", "/first")
    first = settings.get()
    os.environ["HELICAL_AIRFLOW_DATA_DIR"] = "/second"  # behind the object's back: not seen until reload()
    assert settings.get() is first and settings.data_dir() == Path("/first")
    assert settings.reload().data_dir == Path("/second")
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.raw = {}  # type: ignore[misc]
    with pytest.raises(TypeError):
        first.raw["HELICAL_AIRFLOW_DATA_DIR"] = "/x"  # type: ignore[index]


def test_an_undocumented_variable_cannot_be_read() -> None:
    with pytest.raises(KeyError, match="VARIABLES"):
        settings.get().env("HELICAL_AIRFLOW_NO_SUCH_SETTING")
    with pytest.raises(KeyError, match="EXPORTED"):
        settings.export("HELICAL_AIRFLOW_NO_SUCH_SETTING", "1")


def test_the_docs_table_and_the_docstring_list_every_variable() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_settings_docs", REPO / "scripts" / "gen_settings_docs.py")
    assert spec and spec.loader
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert (REPO / "docs" / "settings.md").read_text() == gen.render(), "run scripts/gen_settings_docs.py"
    assert "docs/settings.md" in (REPO / "README.md").read_text()
    for variable in settings.VARIABLES:
        assert variable.name in (settings.__doc__ or ""), variable.name
    # every HELICAL_AIRFLOW_* name written anywhere in src/ is one of them (or one the package sets, or a test's)
    written = set()
    for path in SRC.rglob("*.py"):
        written |= {name for name in re.findall(r"HELICAL_AIRFLOW_[A-Z0-9_]+", path.read_text()) if name[-1] != "_"}
    documented = {v.name for v in settings.VARIABLES} | set(settings.EXPORTED)
    assert sorted(written - documented) == []


def test_one_celery_concurrency_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan's grouping (task slots) and the local launcher's thread sharing assume the same concurrency."""
    from helical_airflow.launchers.local import thread_limits

    for name in ("AIRFLOW__CELERY__WORKER_CONCURRENCY", "HELICAL_AIRFLOW_TASK_SLOTS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"shards": [{"index": i} for i in range(40)]}))
    assert settings.task_slots() == settings.DEFAULT_WORKER_CONCURRENCY
    cores = os.cpu_count() or 1
    assert thread_limits(str(plan))["OMP_NUM_THREADS"] == str(max(1, cores // settings.DEFAULT_WORKER_CONCURRENCY))


def test_a_child_process_sees_the_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HELICAL_AIRFLOW_DATA_DIR", str(tmp_path))
    code = "from helical_airflow import settings; print(settings.data_dir())"
    done = subprocess.run([sys.executable, "-c", code], env=settings.child_env(), capture_output=True, text=True,
                          timeout=60, check=True)  # fmt: skip
    assert done.stdout.strip() == str(tmp_path)
    assert settings.container_env() == {k: os.environ[k] for k in settings.CONTAINER_ENV if k in os.environ}
