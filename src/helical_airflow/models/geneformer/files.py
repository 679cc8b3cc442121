"""Geneformer's files in helical's cache (helical 3.1.4's GeneformerConfig) and the genes it knows."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..vocab import GeneVocabulary, from_ensembl

if TYPE_CHECKING:
    from ..profiles import ModelSpec

#: Geneformer model name -> dictionary version folder (helical's GeneformerConfig.model_map)
VERSION = {
    "gf-6L-10M-i2048": "v1",
    "gf-12L-40M-i2048": "v1",
    "gf-12L-40M-i2048-CZI-CellxGene": "v1",
    "gf-12L-38M-i4096": "v2",
    "gf-12L-38M-i4096-CLcancer": "v2",
    "gf-20L-151M-i4096": "v2",
    "gf-12L-104M-i4096": "v3",
    "gf-12L-104M-i4096-CLcancer": "v3",
    "gf-18L-316M-i4096": "v3",
}


def paths(model_name: str) -> dict[str, str]:
    version = VERSION[model_name]
    base = f"geneformer/{version}"
    # v1 checkpoints ship as pytorch_model.bin, except the CZI one (helical's GeneformerConfig)
    weights = (
        "pytorch_model.bin"
        if version == "v1" and model_name != "gf-12L-40M-i2048-CZI-CellxGene"
        else "model.safetensors"
    )
    return {
        "median": f"{base}/gene_median_dictionary.json",
        "token": f"{base}/token_dictionary.json",
        "mapping": f"{base}/ensembl_mapping_dict.json",
        "config": f"{base}/{model_name}/config.json",
        "training_args": f"{base}/{model_name}/training_args.bin",
        "weights": f"{base}/{model_name}/{weights}",
    }


def files(model_name: str, options: Mapping[str, str]) -> list[str]:
    return list(paths(model_name).values())


def vocabulary(spec: ModelSpec, options: Mapping[str, str], models_dir: Path) -> GeneVocabulary:
    token_file = models_dir / paths(spec.helical_model_name)["token"]
    return from_ensembl(json.loads(token_file.read_text()), models_dir)


def helical_files(model_name: str, options: Mapping[str, str]) -> list[str]:
    """helical's own list (imports helical; tests compare it with `files`)."""
    from helical.models.geneformer import GeneformerConfig

    return list(GeneformerConfig(model_name=model_name).list_of_files_to_download)
