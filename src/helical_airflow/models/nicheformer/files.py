"""nicheformer's files in helical's cache (helical 3.1.4) and the genes it knows."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..vocab import GeneVocabulary

if TYPE_CHECKING:
    from ..profiles import ModelSpec


def files(model_name: str, options: Mapping[str, str]) -> list[str]:
    return []


def vocabulary(spec: ModelSpec, options: Mapping[str, str], models_dir: Path) -> GeneVocabulary:
    raise NotImplementedError("nicheformer's vocabulary")
