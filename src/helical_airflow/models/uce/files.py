"""UCE's files in helical's cache (helical 3.1.4's UCEConfig) and the genes it knows."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..vocab import GeneVocabulary

if TYPE_CHECKING:
    from ..profiles import ModelSpec

#: species option -> protein embedding file (helical.models.uce.gene_embeddings SPECIES_GENE_EMBEDDINGS["ESM2"])
SPECIES_FILES = {
    "human": "Homo_sapiens.GRCh38.gene_symbol_to_embedding_ESM2.pt",
}


def files(model_name: str, options: Mapping[str, str]) -> list[str]:
    species = options.get("species", "human")
    return [
        "uce/all_tokens.torch",
        f"uce/{model_name}.torch",
        "uce/species_chrom.csv",
        "uce/species_offsets.json",
        f"uce/protein_embeddings/{SPECIES_FILES[species]}",
    ]


def vocabulary(spec: ModelSpec, options: Mapping[str, str], models_dir: Path) -> GeneVocabulary:
    raise NotImplementedError("UCE's vocabulary: the genes of the species' protein embeddings file")
