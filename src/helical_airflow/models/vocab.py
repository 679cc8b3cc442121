"""The genes a model knows, read straight from the cache files (no helical, no torch).

Validation on the Airflow scheduler uses this to report vocabulary overlap before any model loads.
Each model keys its vocabulary on one identifier system; the other system is reached through
helical's symbol <-> Ensembl table (`hsapiens_pybiomart.csv`), with the same "first row wins" rule
helical applies when it maps (helical.utils.mapping).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from ..errors import ConfigError
from . import cache

if TYPE_CHECKING:
    from .profiles import ModelSpec

#: tokens that are not genes
SPECIAL_TOKENS = frozenset({"<pad>", "<mask>", "<cls>", "<eos>", "<eoc>"})


@dataclass(frozen=True)
class GeneVocabulary:
    """Gene identifiers the model can embed, in both systems.

    `mapping_file` is helical's symbol <-> Ensembl table, or None when the cache lacks it (then only
    the model's native system is filled, and input in the other system cannot be mapped offline).
    """

    symbols: frozenset[str]
    ensembl: frozenset[str]
    native: str  # "ensembl" or "symbol": what the model's own vocabulary is keyed on
    mapping_file: Path | None

    def known(self, identifiers: list[str], kind: str) -> int:
        """How many of `identifiers` (of kind "ensembl" or "symbol") the model knows."""
        pool = self.ensembl if kind == "ensembl" else self.symbols
        if kind == "ensembl":
            identifiers = [i.split(".", 1)[0] for i in identifiers]  # helical strips version suffixes
        return sum(1 for i in identifiers if i in pool)


def _read_mapping(path: Path) -> list[tuple[str, str]]:
    """(ensembl_id, gene_name) rows of helical's table; rows without a name are skipped."""
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        return [(row["ensembl_id"], row["gene_name"]) for row in reader if row.get("gene_name")]


def read_vocabulary(spec: ModelSpec, cache_dir: str | None) -> GeneVocabulary:
    root = cache.models_dir(cache_dir)
    mapping_path = root / cache.ENSEMBL_MAPPING_FILE
    rows = _read_mapping(mapping_path) if mapping_path.is_file() else []
    mapping_file = mapping_path if mapping_path.is_file() else None

    if spec.family == "geneformer":
        token_file = root / cache.geneformer_paths(spec.helical_model_name)["token"]
        ensembl = frozenset(json.loads(token_file.read_text())) - SPECIAL_TOKENS
        first_id: dict[str, str] = {}
        for ensembl_id, name in rows:  # helical: drop_duplicates(subset="gene_name") keeps the first
            first_id.setdefault(name, ensembl_id)
        symbols = frozenset(name for name, ensembl_id in first_id.items() if ensembl_id in ensembl)
        return GeneVocabulary(symbols=symbols, ensembl=ensembl, native="ensembl", mapping_file=mapping_file)

    if spec.family == "scgpt":
        vocab_file = root / "scgpt" / "scGPT_CP" / "vocab.json"
        symbols = frozenset(json.loads(vocab_file.read_text())) - SPECIAL_TOKENS
        first_name: dict[str, str] = {}
        for ensembl_id, name in rows:  # helical: drop_duplicates(subset="ensembl_id") keeps the first
            first_name.setdefault(ensembl_id, name)
        ensembl = frozenset(e for e, name in first_name.items() if name in symbols)
        return GeneVocabulary(symbols=symbols, ensembl=ensembl, native="symbol", mapping_file=mapping_file)

    raise_no_adapter(spec)


def raise_no_adapter(spec: ModelSpec) -> NoReturn:
    """E222, for every place that dispatches on the model family (here and models/runner.py)."""
    raise ConfigError(
        "E222",
        f"model family {spec.family!r} has no adapter in this version of helical-airflow",
        "use a geneformer or scgpt model (helical-airflow models list)",
    )
