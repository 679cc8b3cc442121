"""TranscriptFormer's files in helical's cache (helical 3.1.4's TranscriptFormerConfig) and the genes it knows."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..vocab import GeneVocabulary

if TYPE_CHECKING:
    from ..profiles import ModelSpec

SPECIES = {
    "tf_sapiens": ["homo_sapiens"],
    "tf_exemplar": [
        "danio_rerio", "drosophila_melanogaster", "homo_sapiens", "mus_musculus", "caenorhabditis_elegans",
    ],
    "tf_metazoa": [
        "drosophila_melanogaster", "lytechinus_variegatus", "plasmodium_falciparum", "xenopus_laevis",
        "caenorhabditis_elegans", "gallus_gallus", "mus_musculus", "saccharomyces_cerevisiae", "danio_rerio",
        "oryctolagus_cuniculus", "spongilla_lacustris", "homo_sapiens", "canis_lupus_familiaris",
        "rattus_norvegicus", "sus_scrofa", "macaca_fascicularis",
    ],
}  # fmt: skip


def files(model_name: str, options: Mapping[str, str]) -> list[str]:
    return [
        f"transcriptformer/{model_name}/config.json",
        f"transcriptformer/{model_name}/model_weights.pt",
        f"transcriptformer/{model_name}/vocabs/assay_vocab.json",
        *(f"transcriptformer/{model_name}/vocabs/{s}_gene.h5" for s in SPECIES[model_name]),
    ]


def vocabulary(spec: ModelSpec, options: Mapping[str, str], models_dir: Path) -> GeneVocabulary:
    raise NotImplementedError("TranscriptFormer's vocabulary: the genes of the species' vocab .h5")
