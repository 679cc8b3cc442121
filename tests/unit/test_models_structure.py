"""The shape of models/: one folder per family, registered once; no import cycle; no family name compared as a string
outside the registry and the family's own folder; the registry imports neither helical nor torch."""

from __future__ import annotations

import ast
import graphlib
import subprocess
import sys
from pathlib import Path

import pytest

from helical_airflow.models import FAMILIES

SRC = Path(__file__).resolve().parents[2] / "src" / "helical_airflow"
MODELS_DIR = SRC / "models"


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, prefix: str = "helical_airflow.models") -> set[str]:
    """Every module under `prefix` that `path` imports, at module level or inside functions."""
    tree = ast.parse(path.read_text())
    here = _module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            for alias in node.names:
                candidate = f"{module}.{alias.name}"
                where = SRC.parent / candidate.replace(".", "/")
                is_module = where.with_suffix(".py").exists() or (where / "__init__.py").exists()
                found.add(candidate if is_module else module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m == prefix or m.startswith(prefix + ".")}


def _import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the package's modules it imports (function-level imports too), for every .py under `root`."""
    prefix = _module_name(root / "__init__.py")
    return {_module_name(path): _imports(path, prefix) - {_module_name(path)} for path in root.rglob("*.py")}


def test_no_import_cycle_inside_models() -> None:
    graphlib.TopologicalSorter(_import_graph(MODELS_DIR)).prepare()  # raises CycleError naming the cycle


def test_no_import_cycle_anywhere_in_the_package() -> None:
    """Issue 18: a 17-module circle (models/registry -> a sequence family -> models/sequence -> seqio -> validate ->
    models; seqout <-> quality/report) hid behind function-local imports; this graph counts those too."""
    graphlib.TopologicalSorter(_import_graph(SRC)).prepare()  # raises CycleError naming the cycle


def test_the_cycle_check_sees_function_level_imports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "helical_airflow"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from . import b\n")
    (package / "b.py").write_text("def f():\n    from .a import g\n    return g\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", package)
    graph = _import_graph(package)
    assert graph["helical_airflow.b"] == {"helical_airflow.a"}
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        assert set(exc.args[1]) >= {"helical_airflow.a", "helical_airflow.b"}
    else:
        raise AssertionError("the circle a -> b -> a (b's import inside a function) was not found")


def test_every_family_is_one_folder_registered_once() -> None:
    folders = {p.parent.name for p in MODELS_DIR.glob("*/__init__.py")}
    assert folders == set(FAMILIES), "a family folder that is not registered, or a registered family without one"
    for name, family in FAMILIES.items():
        assert family.package == f"helical_airflow.models.{name}"
        for module in ("files", "adapter"):
            assert (MODELS_DIR / name / f"{module}.py").is_file(), f"{name}/{module}.py"
        if family.fixture:
            assert (MODELS_DIR / name / f"{family.fixture.split(':')[0]}.py").is_file()
        assert {spec.family for spec in family.models} == {name}
        assert family.default_model in {spec.name for spec in family.models}


def _family_string_compares(path: Path) -> list[str]:
    where = path.relative_to(SRC) if path.is_relative_to(SRC) else path
    names = set(FAMILIES)
    hits = []

    def is_family(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant) and node.value in names:
            return True
        return isinstance(node, ast.Tuple | ast.List | ast.Set) and any(is_family(e) for e in node.elts)

    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare) and any(is_family(c) for c in [node.left, *node.comparators]):
            hits.append(f"{where}:{node.lineno}")
        if isinstance(node, ast.match_case) and is_family(getattr(node.pattern, "value", None) or ast.Pass()):
            hits.append(f"{where}:{node.pattern.lineno}")
    return hits


def test_no_family_name_is_compared_as_a_string_outside_the_registry() -> None:
    allowed = {MODELS_DIR / "registry.py", *(p for name in FAMILIES for p in (MODELS_DIR / name).rglob("*.py"))}
    hits = [hit for path in SRC.rglob("*.py") if path not in allowed for hit in _family_string_compares(path)]
    assert hits == [], f"ask models.registry instead of comparing family names: {hits}"


def test_the_check_finds_a_family_comparison(tmp_path: Path) -> None:
    """The check above can fail: it flags the shapes of comparison it looks for."""
    probe = tmp_path / "probe.py"
    probe.write_text('def f(spec):\n    return spec.family == "uce" or spec.family in ("geneformer", "x")\n')
    assert len(_family_string_compares(probe)) == 2


def test_registry_imports_neither_helical_nor_torch() -> None:
    code = (
        "import sys; from helical_airflow.models import registry, MODELS; "
        "[registry.required_files(s, registry.resolve_options(s, {})) for s in MODELS.values()]; "
        "print(sorted(m for m in ('torch', 'helical', 'transformers') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
