"""Cell2Sentence's files in helical's cache (helical 3.1.4) and the genes it knows.

helical's Cell2Sen loads `AutoModelForCausalLM` / `AutoTokenizer.from_pretrained(hf_model_path,
cache_dir=<models dir>/c2s_model_<size>)`: the files are in the Hugging Face hub cache layout under that folder,
`models--vandijklab--C2S-Scale-Gemma-2-<size>/refs/main` naming the snapshot whose files transformers reads.
The file names are the ones helical's Cell2SenConfig lists (commented out there: helical does not download them
itself; transformers does, which the adapter keeps offline).
"""

from __future__ import annotations

import csv
import inspect
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import ConfigError
from .. import cache
from ..vocab import GeneVocabulary, from_symbols

if TYPE_CHECKING:
    from ..profiles import ModelSpec

#: model size -> (hub repo, cache_dir relative to the models dir): helical's Cell2SenConfig
REPOS = {
    "2B": ("vandijklab/C2S-Scale-Gemma-2-2B", "c2s_model_2B"),
    "27B": ("vandijklab/C2S-Scale-Gemma-2-27B", "c2s_model_27B"),
}
SHARDS = {"2B": 2, "27B": 12}
#: the snapshot this platform reads (refs/main names it). Not the hub's own commit id, which cannot be looked up
#: offline: a real copy goes into snapshots/<REVISION>/ with refs/main holding REVISION (docs/models/c2s.md)
REVISION = "3f1c9a7e2b5d4c6f8a0e1b3d5c7e9f1a2b4c6d8e"


def filenames(model_name: str) -> list[str]:
    """helical's list for the size (Cell2SenConfig), in its order."""
    n = SHARDS[model_name]
    return [
        "config.json", "generation_config.json",
        *(f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)),
        "model.safetensors.index.json", "special_tokens_map.json", "tokenizer_config.json", "tokenizer.json",
    ]  # fmt: skip


def repo_dir(model_name: str) -> str:
    repo, cache_dir = REPOS[model_name]
    return f"{cache_dir}/models--{repo.replace('/', '--')}"


def snapshot(model_name: str) -> str:
    return f"{repo_dir(model_name)}/snapshots/{REVISION}"


def max_genes(options: Mapping[str, str]) -> int | None:
    """The max_genes option: "all" (helical's None) or a positive number of top-ranked genes."""
    value = str(options.get("max_genes", "all"))
    if value == "all":
        return None
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(
            "E227", f"c2s option max_genes={value!r} is not 'all' or a positive whole number",
            "pass --option max_genes=all or e.g. --option max_genes=200",
        )  # fmt: skip
    return int(value)


def files(model_name: str, options: Mapping[str, str]) -> list[str]:
    max_genes(options)  # a bad value fails here, when the run is planned
    return [f"{repo_dir(model_name)}/refs/main", *(f"{snapshot(model_name)}/{name}" for name in filenames(model_name))]


def vocabulary(spec: ModelSpec, options: Mapping[str, str], models_dir: Path) -> GeneVocabulary:
    """A language model reads any word, but it was trained on sentences of gene symbols: the genes it knows are
    the symbols of helical's symbol <-> Ensembl table (human), which also maps Ensembl-id input to symbols."""
    table = models_dir / cache.ENSEMBL_MAPPING_FILE
    if not table.is_file():
        return from_symbols((), models_dir)
    with table.open(newline="") as handle:
        return from_symbols((row["gene_name"] for row in csv.DictReader(handle) if row.get("gene_name")), models_dir)


def helical_files(model_name: str, options: Mapping[str, str]) -> list[str]:
    """helical's own list (imports helical; tests compare it with `files`): the repo and cache_dir from helical's
    Cell2SenConfig, the file names from the list its source keeps (commented out) for that size."""
    from helical.constants.paths import CACHE_DIR_HELICAL
    from helical.models.c2s import Cell2SenConfig

    config = Cell2SenConfig(model_size=model_name).config
    source = inspect.getsource(Cell2SenConfig.__init__)
    branch = source.split(f'model_size == "{model_name}"', 1)[1].split("elif", 1)[0].split("else:", 1)[0]
    names = [name.split("/", 1)[1] for name in re.findall(r'#\s*"([^"]+)",', branch)]
    cache_dir = Path(config["model_path"]).relative_to(CACHE_DIR_HELICAL).as_posix()
    repo = f"{cache_dir}/models--{config['hf_model_path'].replace('/', '--')}"
    return [f"{repo}/refs/main", *(f"{repo}/snapshots/{REVISION}/{name}" for name in names)]
