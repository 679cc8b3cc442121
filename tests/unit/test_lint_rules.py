"""The import rule of issue 18, as ruff applies it with the project's own configuration (pyproject.toml): inside a
function only the heavy or optional dependencies may be imported (PLC0415, whose allowlist is TID253's
banned-module-level-imports), and those only inside functions (TID253). scripts/lint.sh runs ruff over src/; this
checks that the configuration still says what the issue asks, on probe modules laid out like the package's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RULES = {"PLC0415", "TID253"}
# the dependencies issue 18 names; pyproject.toml lists a few more (transformers, sklearn, umap, psycopg, ...)
HEAVY = ["torch", "helical.models.uce", "scanpy", "matplotlib.pyplot", "airflow.sdk", "docker", "kubernetes.client",
         "mlflow"]  # fmt: skip
OTHERS = ["import json", "from pathlib import Path", "import numpy", "import pandas", "from . import plan",
          "from .models import registry", "from helical_airflow import store"]  # fmt: skip


def import_findings(tmp_path: Path, files: dict[str, str]) -> dict[str, list[tuple[int, str]]]:
    """(line, code) of ruff's import findings per file, for `files` (path in the project -> source) laid out under
    a copy of the project's pyproject.toml, so its per-file exceptions apply as they do to the real files."""
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    for rel, source in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(source)
    run = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--exit-zero", "--output-format", "json", *files],
        text=True, capture_output=True, cwd=tmp_path, check=True,
    )  # fmt: skip
    found: dict[str, list[tuple[int, str]]] = {rel: [] for rel in files}
    for f in json.loads(run.stdout):
        if f["code"] in RULES:
            found[str(Path(f["filename"]).relative_to(tmp_path))].append((f["location"]["row"], f["code"]))
    return found


def inside(statement: str) -> str:
    return f"def load() -> object:\n    {statement}\n\n    return {statement.split()[-1]}\n"


def test_heavy_dependencies_are_imported_inside_functions_only(tmp_path: Path) -> None:
    files = {}
    for i, module in enumerate(HEAVY):
        files[f"src/helical_airflow/inside{i}.py"] = inside(f"import {module}")
        files[f"src/helical_airflow/top{i}.py"] = f"import {module}\n\n\ndef load() -> object:\n    return {module}\n"
    found = import_findings(tmp_path, files)
    for i, module in enumerate(HEAVY):
        assert found[f"src/helical_airflow/inside{i}.py"] == [], module
        assert found[f"src/helical_airflow/top{i}.py"] == [(1, "TID253")], module


def test_other_imports_inside_a_function_are_findings(tmp_path: Path) -> None:
    files = {f"src/helical_airflow/probe{i}.py": inside(statement) for i, statement in enumerate(OTHERS)}
    found = import_findings(tmp_path, files)
    assert [found[f"src/helical_airflow/probe{i}.py"] for i in range(len(OTHERS))] == [[(2, "PLC0415")]] * len(OTHERS)


def test_the_rule_covers_every_package_module(tmp_path: Path) -> None:
    """No per-file exception switches PLC0415 off for a module of the package (tests and benchmarks have one)."""
    files = {str(p.relative_to(ROOT)): inside("import json") for p in sorted(ROOT.glob("src/helical_airflow/**/*.py"))}
    assert len(files) > 100
    found = import_findings(tmp_path, files)
    assert {rel: codes for rel, codes in found.items() if codes != [(2, "PLC0415")]} == {}
