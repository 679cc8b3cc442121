"""Tahoe-x1's files in helical's cache (helical 3.1.4) and the genes it knows.

helical's `TXModel.from_hf` (helical/models/tahoe/tahoe_x1/model/model.py) fetches four files of the Hugging
Face repo `tahoebio/Tahoe-x1` with `hf_hub_download(repo_id, filename)`: no `cache_dir`, so they land in the
Hugging Face hub cache (HF_HUB_CACHE), not under helical's models folder. The adapter points the hub cache at
`<models dir>/tahoe/hub` (so the files live under the same prefix as every other family's) and turns the hub
offline; the files are then read in the hub cache layout: `models--tahoebio--Tahoe-x1/refs/main` holds the
snapshot revision, `snapshots/<revision>/<size>-model/...` the files.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..vocab import GeneVocabulary, from_ensembl
from .flash import prepare_flash_attn_import

if TYPE_CHECKING:
    from ..profiles import ModelSpec

REPO_ID = "tahoebio/Tahoe-x1"  # helical's TahoeConfig hf_repo_id default
#: the hub cache folder (HF_HUB_CACHE) the adapter gives helical, relative to the models dir
HUB_CACHE = "tahoe/hub"
#: the snapshot this platform reads (refs/main names it). Not the hub's own commit id, which cannot be looked up
#: offline: a real copy goes into snapshots/<REVISION>/ with refs/main holding REVISION (docs/models/tahoe.md)
REVISION = "6d7a3c1f0b9e4a25c8e1d0f3b2a4c6e8f0a1b3c5"
#: what from_hf downloads for a model size, in its order
FILENAMES = ("vocab.json", "model_config.yml", "collator_config.yml", "model.safetensors")


def repo_dir(repo_id: str = REPO_ID) -> str:
    return f"{HUB_CACHE}/models--{repo_id.replace('/', '--')}"


def snapshot(model_name: str) -> str:
    """The model size's folder inside the snapshot, relative to the models dir."""
    return f"{repo_dir()}/snapshots/{REVISION}/{model_name}-model"


def files(model_name: str, options: Mapping[str, str]) -> list[str]:
    return [f"{repo_dir()}/refs/main", *(f"{snapshot(model_name)}/{name}" for name in FILENAMES)]


def vocabulary(spec: ModelSpec, options: Mapping[str, str], models_dir: Path) -> GeneVocabulary:
    """vocab.json maps Ensembl ids (and `<pad>`, `<cls>`, ...) to token ids."""
    tokens = json.loads((models_dir / snapshot(spec.helical_model_name) / "vocab.json").read_text())
    return from_ensembl((t for t in tokens if not t.startswith("<")), models_dir)


def helical_files(model_name: str, options: Mapping[str, str]) -> list[str]:
    """helical's own list (imports helical; tests compare it with `files`): the repo from helical's TahoeConfig,
    the file names from what TXModel.from_hf asks hf_hub_download for (read from its source, as it has no list)."""
    prepare_flash_attn_import()
    from helical.models.tahoe import TahoeConfig
    from helical.models.tahoe.tahoe_x1.model import TXModel

    config = TahoeConfig(model_size=model_name).config
    source = inspect.getsource(TXModel.from_hf)
    names = re.findall(r'_download\(f"\{model_size\}-model/([^"]+)"\)', source)
    repo = f"{HUB_CACHE}/models--{config['hf_repo_id'].replace('/', '--')}"
    base = f"{repo}/snapshots/{REVISION}/{config['model_size']}-model"
    return [f"{repo}/refs/main", *(f"{base}/{name}" for name in names)]
