"""The genes a model knows, read straight from the cache files (no helical, no torch).

Validation on the Airflow scheduler uses this to report vocabulary overlap before any model loads.
Each model keys its vocabulary on one identifier system; the other system is reached through
helical's symbol <-> Ensembl table (`hsapiens_pybiomart.csv`), with the same "first row wins" rule
helical applies when it maps (helical.utils.mapping). Each family's `files.py` reads its own vocabulary
file and hands the identifiers to `from_ensembl` or `from_symbols` here.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from . import cache

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


def _mapping(models_dir: Path) -> tuple[list[tuple[str, str]], Path | None]:
    """(ensembl_id, gene_name) rows of helical's table (rows without a name skipped), and its path."""
    path = models_dir / cache.ENSEMBL_MAPPING_FILE
    if not path.is_file():
        return [], None
    with path.open(newline="") as handle:
        rows = [(row["ensembl_id"], row["gene_name"]) for row in csv.DictReader(handle) if row.get("gene_name")]
    return rows, path


def from_ensembl(ids: Iterable[str], models_dir: Path) -> GeneVocabulary:
    """A vocabulary keyed on Ensembl ids; symbols reach it through helical's table (first id per name wins,
    as helical's drop_duplicates(subset="gene_name") keeps the first)."""
    ensembl = frozenset(ids) - SPECIAL_TOKENS
    rows, mapping_file = _mapping(models_dir)
    first_id: dict[str, str] = {}
    for ensembl_id, name in rows:
        first_id.setdefault(name, ensembl_id)
    symbols = frozenset(name for name, ensembl_id in first_id.items() if ensembl_id in ensembl)
    return GeneVocabulary(symbols=symbols, ensembl=ensembl, native="ensembl", mapping_file=mapping_file)


def from_symbols(names: Iterable[str], models_dir: Path) -> GeneVocabulary:
    """A vocabulary keyed on gene symbols; Ensembl ids reach it through helical's table (first name per id
    wins, as helical's drop_duplicates(subset="ensembl_id") keeps the first)."""
    symbols = frozenset(names) - SPECIAL_TOKENS
    rows, mapping_file = _mapping(models_dir)
    first_name: dict[str, str] = {}
    for ensembl_id, name in rows:
        first_name.setdefault(ensembl_id, name)
    ensembl = frozenset(e for e, name in first_name.items() if name in symbols)
    return GeneVocabulary(symbols=symbols, ensembl=ensembl, native="symbol", mapping_file=mapping_file)
