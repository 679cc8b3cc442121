"""TranscriptFormer's files in helical's cache (helical 3.1.4's TranscriptFormerConfig) and the genes it knows.

Each model's `vocabs/` holds one `<species>_gene.h5` (ESM2 protein embeddings, one vector per gene id) for every
species helical downloads for it. The checkpoint's `config.json` names, in `data_config.esm2_mappings`, the files
its gene vocabulary is built from: the species it was trained on. A species whose file is downloaded but not
named there (tf_metazoa's four extra mammals) is out of distribution: helical swaps the gene embedding layer for
that species' file (`pretrained_embedding_species`, helical's "embedding surgery").
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import h5py

from ...errors import ConfigError
from ..vocab import GeneVocabulary, from_ensembl

if TYPE_CHECKING:
    from ..profiles import ModelSpec

#: the vocab files helical 3.1.4 downloads for each model, in its order
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

#: the species each model was trained on (the TranscriptFormer paper / README: TF-Sapiens human only; TF-Exemplar
#: human and four model organisms; TF-Metazoa 12 species). The fixture's config.json names these in esm2_mappings;
#: at run time the adapter reads the cached config.json itself, never this table.
TRAINED_ON = {
    "tf_sapiens": ["homo_sapiens"],
    "tf_exemplar": SPECIES["tf_exemplar"],
    "tf_metazoa": [
        s for s in SPECIES["tf_metazoa"]
        if s not in ("canis_lupus_familiaris", "rattus_norvegicus", "sus_scrofa", "macaca_fascicularis")
    ],
}  # fmt: skip

#: every species any model has a vocab file for: the `species` option's choices (checked per model in `files`)
ALL_SPECIES = tuple(dict.fromkeys(s for model in SPECIES.values() for s in model))
DEFAULT_SPECIES = "homo_sapiens"


def model_dir(model_name: str) -> str:
    return f"transcriptformer/{model_name}"


def species_of(model_name: str, options: Mapping[str, str]) -> str:
    """The cells' species (the `species` option), E227 when the model has no vocab file for it."""
    species = options.get("species", DEFAULT_SPECIES)
    if species not in SPECIES[model_name]:
        raise ConfigError(
            "E227",
            f"TranscriptFormer model {model_name} has no gene vocabulary for species {species!r} "
            f"(it has: {', '.join(SPECIES[model_name])})",
            "pass --option species=NAME with one of those, or pick tf_exemplar / tf_metazoa for other species",
        )
    return species


def files(model_name: str, options: Mapping[str, str]) -> list[str]:
    species_of(model_name, options)  # a species the model lacks fails here, before anything loads
    base = model_dir(model_name)
    return [
        f"{base}/config.json",
        f"{base}/model_weights.pt",
        f"{base}/vocabs/assay_vocab.json",
        *(f"{base}/vocabs/{s}_gene.h5" for s in SPECIES[model_name]),
    ]


def helical_files(model_name: str, options: Mapping[str, str]) -> list[str]:
    """helical's own list (imports helical; tests compare it with `files`)."""
    from helical.models.transcriptformer import TranscriptFormerConfig

    return list(TranscriptFormerConfig(model_name=model_name).list_of_files_to_download)


def trained_species(models_dir: Path, model_name: str) -> list[str]:
    """The species the checkpoint's gene vocabulary is built from: its config.json's esm2_mappings."""
    cfg = json.loads((models_dir / model_dir(model_name) / "config.json").read_text())
    mappings = cfg["model"]["data_config"].get("esm2_mappings") or []
    return [Path(m).name.removesuffix("_gene.h5") for m in mappings]


def gene_ids(path: Path) -> list[str]:
    """The gene ids of a vocab .h5 (its `keys` dataset, as helical's utils.load_from_hdf5 reads it)."""
    with h5py.File(path, "r") as f:
        return [k.decode("utf-8") for k in f["keys"][:]]


def check_assay(models_dir: Path, model_name: str, assay: str) -> None:
    """E227 unless `assay` is a key of the model's assay_vocab.json (helical would map it to "unknown" silently)."""
    assays = json.loads((models_dir / model_dir(model_name) / "vocabs" / "assay_vocab.json").read_text())
    if assay not in assays:
        raise ConfigError(
            "E227",
            f"TranscriptFormer model {model_name} knows no assay {assay!r} (its assay_vocab.json has: "
            f"{', '.join(assays)})",
            "pass --option assay=NAME with one of those, or leave it unset (unknown)",
        )


def vocabulary(spec: ModelSpec, options: Mapping[str, str], models_dir: Path) -> GeneVocabulary:
    """The genes of the cells' species: the ids of `<species>_gene.h5` (Ensembl ids for human).

    helical maps gene symbols through its human table only (load_gene_features, species="hsapiens"), so symbols
    reach human genes; other species' cells must come with their gene ids.
    """
    model = spec.helical_model_name
    species = species_of(model, options)
    check_assay(models_dir, model, options.get("assay", "unknown"))
    return from_ensembl(gene_ids(models_dir / model_dir(model) / "vocabs" / f"{species}_gene.h5"), models_dir)
