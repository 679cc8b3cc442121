"""GenePT's files in helical's cache (helical 3.1.4's GenePTConfig) and the genes it knows.

One file: `genept/genept_embeddings/genept_embeddings.json`, `{SYMBOL: {"embeddings": [float, ...]}}`, the
text-embedding-ada-002 vector (1,536 wide) of each gene's NCBI summary. helical downloads it with
`Downloader.download_via_name` (checked against S3 unless runner.trust_cached_files registered it).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import cache
from ..vocab import GeneVocabulary, from_symbols

if TYPE_CHECKING:
    from ..profiles import ModelSpec

EMBEDDINGS = "genept/genept_embeddings/genept_embeddings.json"


def files(model_name: str, options: Mapping[str, str]) -> list[str]:
    return [EMBEDDINGS]


def load_embeddings(models_dir: Path) -> dict[str, Any]:
    table: dict[str, Any] = json.loads((models_dir / EMBEDDINGS).read_text())
    return table


def vocabulary(spec: ModelSpec, options: Mapping[str, str], models_dir: Path) -> GeneVocabulary:
    """helical looks each gene up as `symbol.upper()`: a symbol is known when its upper-case form is a key, so
    the symbols of helical's table whose upper-case form is a key count too (C1orf159 -> C1ORF159)."""
    keys = set(load_embeddings(models_dir))
    names = set(keys)
    mapping = models_dir / cache.ENSEMBL_MAPPING_FILE
    if mapping.is_file():
        with mapping.open(newline="") as handle:
            names |= {
                row["gene_name"] for row in csv.DictReader(handle) if (row.get("gene_name") or "").upper() in keys
            }
    return from_symbols(names, models_dir)


def helical_files(model_name: str, options: Mapping[str, str]) -> list[str]:
    """helical's own list (imports helical; tests compare it with `files`)."""
    from helical.models.genept import GenePTConfig

    return list(GenePTConfig(model_name=model_name).config["list_of_files_to_download"])
