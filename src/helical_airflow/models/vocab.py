"""The genes a model knows, read straight from the cache files (no helical, no torch).

Validation on the Airflow scheduler uses this to report vocabulary overlap before any model loads.
Each model keys its vocabulary on one identifier system; the other system is reached through
helical's symbol <-> Ensembl table (`hsapiens_pybiomart.csv`), with the same "first row wins" rule
helical applies when it maps (helical.utils.mapping). Each family's `files.py` reads its own vocabulary
file and hands the identifiers to `from_ensembl` or `from_symbols` here.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import cache

#: tokens that are not genes
SPECIAL_TOKENS = frozenset({"<pad>", "<mask>", "<cls>", "<eos>", "<eoc>"})

#: helical.utils.mapping's Ensembl gene id pattern: how helical tells Ensembl ids from symbols, per gene
ENSEMBL_RE = re.compile(r"^ENS[A-Z]{0,4}G\d{11}(\.\d+)?$")


def is_ensembl(name: str) -> bool:
    return bool(ENSEMBL_RE.match(name))


def strip_version(name: str) -> str:
    """`ENSG00000141510.17` -> `ENSG00000141510`; a symbol (which may hold a dot: `AC000068.10`) is left alone."""
    return name.split(".", 1)[0] if is_ensembl(name) else name


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
    #: an id of the other system -> the native id it reaches through helical's table (known genes only)
    aliases: Mapping[str, str] = field(default_factory=dict, compare=False)

    def known(self, identifiers: list[str], kind: str) -> int:
        """How many of `identifiers` (of kind "ensembl" or "symbol") the model knows."""
        pool = self.ensembl if kind == "ensembl" else self.symbols
        if kind == "ensembl":
            identifiers = [i.split(".", 1)[0] for i in identifiers]  # helical strips version suffixes
        return sum(1 for i in identifiers if i in pool)

    def canonical_id(self, name: str) -> str | None:
        """The model's own id for the input gene `name`, or None when the model does not know it.

        The one matching rule, shared by validation (genes_in_vocab, E112) and every adapter (what reaches helical):
        each name is read in its own system (helical's per-gene Ensembl pattern), an Ensembl id without its version
        suffix, and the other system reaches the native one through helical's table ("first row wins")."""
        bare = strip_version(name)
        native_pool = self.ensembl if self.native == "ensembl" else self.symbols
        if is_ensembl(name) == (self.native == "ensembl"):
            return bare if bare in native_pool else None
        return self.aliases.get(bare)

    def canonical_ids(self, names: Iterable[str]) -> list[str | None]:
        return [self.canonical_id(str(n)) for n in names]


@dataclass(frozen=True)
class CanonicalGenes:
    """The genes a model saw in a shard: the known input genes as the model's own ids, in canonical (sorted)
    order. Two layouts of the same genes (column order, id system, version suffixes) give the same list."""

    ids: tuple[str, ...]

    @property
    def count(self) -> int:
        return len(self.ids)

    @property
    def sha256(self) -> str:
        return gene_list_sha256(self.ids)


def gene_list_sha256(ids: Iterable[str]) -> str:
    """sha256 of the ids, one a line (each followed by a newline): `sha256sum` of the list written out agrees."""
    return hashlib.sha256("".join(f"{i}\n" for i in ids).encode()).hexdigest()


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
    aliases = {name: ensembl_id for name, ensembl_id in first_id.items() if ensembl_id in ensembl}
    return GeneVocabulary(symbols=frozenset(aliases), ensembl=ensembl, native="ensembl", mapping_file=mapping_file,
                          aliases=aliases)  # fmt: skip


def from_symbols(names: Iterable[str], models_dir: Path) -> GeneVocabulary:
    """A vocabulary keyed on gene symbols; Ensembl ids reach it through helical's table (first name per id
    wins, as helical's drop_duplicates(subset="ensembl_id") keeps the first)."""
    symbols = frozenset(names) - SPECIAL_TOKENS
    rows, mapping_file = _mapping(models_dir)
    first_name: dict[str, str] = {}
    for ensembl_id, name in rows:
        first_name.setdefault(ensembl_id, name)
    aliases = {e: name for e, name in first_name.items() if name in symbols}
    return GeneVocabulary(symbols=symbols, ensembl=frozenset(aliases), native="symbol", mapping_file=mapping_file,
                          aliases=aliases)  # fmt: skip
