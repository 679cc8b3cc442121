"""Nicheformer (helical.models.nicheformer): single-cell and spatial omics encoder, human and mouse.

One model: helical 3.1.4 loads theislab/Nicheformer (NicheformerConfig's default repository; another repository
id downloads into the same `<models>/nicheformer/` folder, so one cache holds one Nicheformer). Per-cell by
design: each cell is normalised by its own total count, ranked, padded to 1,500 positions on its own and
mean-pooled over them (adapter.py says more). Gene ids are Ensembl ids; symbols reach them through helical's table.
"""

from __future__ import annotations

from ..family import ModelFamily
from ..profiles import ModelOption, ModelSpec, gpu_only
from . import files

#: helical's NicheformerTokenizer TECHNOLOGY_DICT keys, verbatim (tokenization_nicheformer.py)
TECHNOLOGIES = (
    "merfish", "MERFISH", "cosmx", "NanoString digital spatial profiling", "Xenium", "10x 5' v2", "10x 3' v3",
    "10x 3' v2", "10x 5' v1", "10x 3' v1", "10x 3' transcription profiling", "10x transcription profiling",
    "10x 5' transcription profiling", "CITE-seq", "Smart-seq v4",
)  # fmt: skip
LAYERS = 12  # of the real model: `layer` counts from 0, or from the end with negative values

FAMILY = ModelFamily(
    name="nicheformer",
    package=__name__,
    hub_repo="theislab/Nicheformer",  # helical downloads its 4 files from the hub's resolve/main links
    default_model="nicheformer",
    files=files.files,
    vocabulary=files.vocabulary,
    adapter="adapter:NicheformerRunner",
    fixture="fixture:build",
    engines=("helical",),
    options=(
        ModelOption(
            name="species",
            default="human",
            choices=("human", "mouse"),
            help="species context token (obs 'specie' for helical's tokenizer)",
        ),
        ModelOption(
            name="technology",
            default="10x 3' v3",
            choices=TECHNOLOGIES,
            help="assay context token (obs 'assay'), one of helical's technology names",
        ),
        ModelOption(
            name="modality",
            default="dissociated",
            choices=("dissociated", "spatial"),
            help="modality context token (obs 'modality')",
        ),
        ModelOption(
            name="with_context",
            default="false",
            choices=("false", "true"),
            help="include the three context tokens in the mean-pooled cell embedding",
        ),
        ModelOption(
            name="layer",
            default="-1",
            choices=tuple(str(i) for i in range(-LAYERS, LAYERS)),
            help="transformer layer the embedding is read from (-1: the last)",
        ),
    ),  # fmt: skip
    models=(
        ModelSpec(
            name="nicheformer",
            family="nicheformer",
            helical_model_name="theislab/Nicheformer",
            embedding_dim=512,
            # every cell runs the full 1,500 positions through 12 layers (~1.3e11 FLOPs a cell): on a CPU about a
            # second a cell, so a GPU by default; helical's get_embeddings runs fp32 (no autocast)
            profile=gpu_only("fp32", batch_size=32, memory_cap_gb=8),
            description="Nicheformer, 12 layers, 49M parameters, human and mouse, dissociated and spatial",
        ),
    ),  # fmt: skip
    quirks=(
        "species/technology/modality are run options written into obs columns specie/assay/modality of the cleaned "
        "input (the caller's obs is never read), so every cell gets all three context tokens",
        "helical drops the first three positions when with_context=false whether or not context tokens exist; "
        "always writing the three columns makes them exactly the context tokens",
        "the tokenizer aligns genes to model.h5ad with an outer ad.concat, which sorts gene ids; the fixture's "
        "reference and vocab.json are sorted the same way",
        "download_via_link skips any file that exists (no HEAD request), so cached files are never replaced",
        "technology_mean (helical's optional per-gene normalisation array) is not offered: helical's default None",
        "get_embeddings does not autocast: GPU runs asked for fp16/bf16 run under torch.autocast",
        "helical looks ids up with their version suffix (ENSG...N matched nothing: E301 'No matching genes' after "
        "validation passed); the genes reach it as Ensembl ids without version, sorted (runner.canonical_input), "
        "matched by the same rule validation counts with (GeneVocabulary.canonical_id)",
    ),
)
