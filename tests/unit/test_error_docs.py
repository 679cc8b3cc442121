"""docs/errors.md lists every error code the code raises."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_error_code_is_documented() -> None:
    spec = importlib.util.spec_from_file_location("gen_error_docs", ROOT / "scripts" / "gen_error_docs.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    codes = module.collect()
    assert len(codes) > 40 and "E101" in codes and "E401" in codes
    assert (ROOT / "docs" / "errors.md").read_text() == module.render(), "run scripts/gen_error_docs.py"
