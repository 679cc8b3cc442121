"""Nicheformer's files in helical's cache (helical 3.1.4's NicheformerConfig) and the genes it knows.

helical downloads four files of the Hugging Face repository into `<models>/nicheformer/` (its own folder,
whatever the repository id) with `Downloader.download_via_link`, which does nothing for a file that exists:
no HEAD request, no re-download (so the fixture and a cached real model are never replaced). The tokenizer
keys genes on Ensembl ids: `vocab.json` maps every id (and bracketed context tokens) to a token, and
`model.h5ad` is the reference AnnData whose gene list the input is aligned to.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..vocab import GeneVocabulary, from_ensembl

if TYPE_CHECKING:
    from ..profiles import ModelSpec

MODEL_DIR = "nicheformer"
#: helical's nicheformer_config._MODEL_FILES, in its order
MODEL_FILES = ("config.json", "vocab.json", "model.safetensors", "model.h5ad")


def files(model_name: str, options: Mapping[str, str]) -> list[str]:
    return [f"{MODEL_DIR}/{name}" for name in MODEL_FILES]


def vocabulary(spec: ModelSpec, options: Mapping[str, str], models_dir: Path) -> GeneVocabulary:
    # helical's process_data keeps the genes whose id is a vocab.json key not starting with "["
    vocab = json.loads((models_dir / MODEL_DIR / "vocab.json").read_text())
    return from_ensembl((k for k in vocab if not k.startswith("[")), models_dir)


def helical_files(model_name: str, options: Mapping[str, str]) -> list[str]:
    """helical's own list (imports helical; tests compare it with `files`)."""
    from helical.constants.paths import CACHE_DIR_HELICAL
    from helical.models.nicheformer import NicheformerConfig

    config = NicheformerConfig(model_name=model_name)
    return [str(Path(path).relative_to(CACHE_DIR_HELICAL)) for path, _url in config.list_of_files_to_download]
