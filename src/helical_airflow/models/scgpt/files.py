"""scGPT's files in helical's cache (helical 3.1.4's scGPTConfig) and the genes it knows."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..vocab import GeneVocabulary, from_symbols

if TYPE_CHECKING:
    from ..profiles import ModelSpec

MODEL_DIR = "scgpt/scGPT_CP"


def files(model_name: str, options: Mapping[str, str]) -> list[str]:
    return [f"{MODEL_DIR}/vocab.json", f"{MODEL_DIR}/best_model.pt"]


def vocabulary(spec: ModelSpec, options: Mapping[str, str], models_dir: Path) -> GeneVocabulary:
    return from_symbols(json.loads((models_dir / MODEL_DIR / "vocab.json").read_text()), models_dir)


def helical_files(model_name: str, options: Mapping[str, str]) -> list[str]:
    """helical's own list (imports helical; tests compare it with `files`)."""
    from helical.models.scgpt import scGPTConfig

    return list(scGPTConfig().config["list_of_files_to_download"])
