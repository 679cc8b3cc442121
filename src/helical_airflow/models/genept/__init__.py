"""GenePT (helical.models.genept): cells as expression-weighted GPT-3.5 embeddings of gene descriptions.

One model, the only name helical 3.1.4's GenePTConfig accepts ("gpt3.5"): text-embedding-ada-002 vectors
(1,536 wide; helical's config says embsize 512, which nothing reads) of each gene's NCBI summary, looked up by
upper-case symbol. No neural network runs: a matrix product on the CPU, whatever the device.
Per-cell with the default genes=all (adapter.py says why helical's own process_data is not).
"""

from __future__ import annotations

from ..family import ModelFamily
from ..profiles import ModelOption, ModelSpec, any_device
from . import files

FAMILY = ModelFamily(
    name="genept",
    package=__name__,
    default_model="genept-gpt3.5",
    files=files.files,
    vocabulary=files.vocabulary,
    adapter="adapter:GenePTRunner",
    fixture="fixture:build",
    engines=("helical",),
    options=(
        ModelOption(
            name="genes",
            default="all",
            choices=("all", "hvg"),
            help="all: every gene in GenePT's table (per-cell); hvg: helical's process_data as is, the shard's "
            "2,000 highly variable genes (a cell's embedding then depends on its shard)",
        ),
    ),
    models=(
        ModelSpec(
            name="genept-gpt3.5",
            family="genept",
            helical_model_name="gpt3.5",
            embedding_dim=1536,
            # cells per get_embeddings call (helical rebuilds the gene-vector matrix each call); the JSON table
            # (~33k genes x 1,536 floats as Python lists) takes a few GB of host memory; no GPU is used
            profile=any_device("fp32", batch_size=2048, memory_cap_gb=8),
            description="GenePT w/ GPT-3.5 (text-embedding-ada-002) embeddings of NCBI gene summaries",
        ),
    ),
    bf16_unsupported="helical's GenePT.get_embeddings returns its one matrix product (counts x gene embeddings, "
    "helical/models/genept/model.py:136) as a torch tensor, bfloat16 under bf16 autocast, which numpy cannot hold "
    "('TypeError: Got unsupported ScalarType BFloat16', measured on the CPU fixture); with no network to speed up, "
    "GenePT runs in fp32",
    quirks=(
        "helical's process_data keeps the shard's 2,000 highly variable genes (seurat_v3 across cells); the "
        "default genes=all runs its per-cell steps without that selection, then helical's get_embeddings",
        "helical looks genes up as symbol.upper(): the vocabulary counts a symbol as known when its upper-case "
        "form is in the table",
        "the width is read from the table's vectors (helical's config says embsize 512; the real vectors are 1,536)",
        "X is given to helical as float32 CSR (it calls X.toarray()); cells go in chunks of batch_size",
        "helical computes on the CPU whatever the device: the profile never asks for a GPU",
    ),
)
