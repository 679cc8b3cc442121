"""helical's weights-cache layout, known here without importing helical.

helical computes `CACHE_DIR_HELICAL = $CACHE_DIR_HELICAL_PREFIX/.cache/helical/models` (or
`~/.cache/helical/models`) once, at import time, and each model config lists the files it downloads
relative to that folder. The lists below mirror helical 3.1.4's configs; a test checks them against
helical's own `list_of_files_to_download` so a helical upgrade cannot silently change the layout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: marker file at the cache root (the prefix) written by `models fixture`
FIXTURE_MARKER = "FIXTURE.json"

#: helical's symbol <-> Ensembl table (helical.utils.mapping), downloaded on first use
ENSEMBL_MAPPING_FILE = "hsapiens_pybiomart.csv"

#: Geneformer model name -> dictionary version folder (helical's GeneformerConfig.model_map)
GENEFORMER_VERSION = {
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

UCE_SPECIES_FILE = "uce/protein_embeddings/Homo_sapiens.GRCh38.gene_symbol_to_embedding_ESM2.pt"

TRANSCRIPTFORMER_SPECIES = {
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
}


def cache_root(cache_dir: str | None) -> Path:
    """The prefix helical is pointed at (CACHE_DIR_HELICAL_PREFIX); None means helical's default, $HOME."""
    return Path(cache_dir).expanduser().resolve() if cache_dir else Path.home()


def models_dir(cache_dir: str | None) -> Path:
    """Where helical keeps model files under that prefix."""
    return cache_root(cache_dir) / ".cache" / "helical" / "models"


def geneformer_paths(model_name: str) -> dict[str, str]:
    version = GENEFORMER_VERSION[model_name]
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


def required_files(family: str, model_name: str) -> list[str]:
    """The files helical's config for this model downloads, in helical's order."""
    if family == "geneformer":
        return list(geneformer_paths(model_name).values())
    if family == "scgpt":
        return ["scgpt/scGPT_CP/vocab.json", "scgpt/scGPT_CP/best_model.pt"]
    if family == "uce":
        return [
            "uce/all_tokens.torch",
            f"uce/{model_name}.torch",
            "uce/species_chrom.csv",
            "uce/species_offsets.json",
            UCE_SPECIES_FILE,
        ]
    if family == "transcriptformer":
        return [
            f"transcriptformer/{model_name}/config.json",
            f"transcriptformer/{model_name}/model_weights.pt",
            f"transcriptformer/{model_name}/vocabs/assay_vocab.json",
            *(f"transcriptformer/{model_name}/vocabs/{s}_gene.h5" for s in TRANSCRIPTFORMER_SPECIES[model_name]),
        ]
    raise ValueError(f"unknown model family {family!r}")


def missing_hint(has_fixture: bool) -> str:
    if has_fixture:
        return (
            "offline: build the fixture cache (helical-airflow models fixture --out DIR) and pass --cache-dir DIR; "
            "online: run helical once with CACHE_DIR_HELICAL_PREFIX=DIR to download the weights"
        )
    return (
        "this model has no offline fixture: download its weights by running helical once with "
        "CACHE_DIR_HELICAL_PREFIX=DIR (network needed), then pass --cache-dir DIR"
    )


def is_fixture_cache(cache_dir: str | None) -> bool:
    """True when the cache was written by `models fixture` (random weights, synthetic vocabulary)."""
    return (cache_root(cache_dir) / FIXTURE_MARKER).is_file()


def fixture_info(cache_dir: str | None) -> dict[str, Any] | None:
    """The fixture marker's contents, or None for a real cache."""
    marker = cache_root(cache_dir) / FIXTURE_MARKER
    if not marker.is_file():
        return None
    info: dict[str, Any] = json.loads(marker.read_text())
    return info
