"""UCE (helical.models.uce): Universal Cell Embeddings over ESM2 protein embeddings of each gene.

Both models helical 3.1.4 accepts (UCEConfig.model_map): `4layer_model` and `33l_8ep_1024t_1280`, each for the
eight species helical ships protein embeddings for. The width is 1280 for both (helical's output_dim). Per-cell
by construction in this adapter: helical samples each cell's genes with its own fixed-seed generator, and the
adapter batches only cells of equal sentence length, so no padding enters a cell's attention (adapter.py).
"""

from __future__ import annotations

from ..family import ModelFamily
from ..profiles import ModelOption, ModelSpec, any_device, gpu_only
from . import files

# fp32: helical's UCE get_embeddings does not autocast (UCE's own reference runs fp32); fp16/bf16 on a GPU are
# honoured with torch.autocast by the adapter. Memory caps are host RAM of one shard process: helical's loader
# allocates a 145,469 x 5,120 fp32 token table (3 GB) beside the 2.9 GB all_tokens.torch it loads, plus the
# transformer (4 layers: 0.3 GB; 33 layers: 2.6 GB) and the shard's dense count matrix (helical densifies X).
FAMILY = ModelFamily(
    name="uce",
    package=__name__,
    default_model="4layer_model",
    files=files.files,
    vocabulary=files.vocabulary,
    adapter="adapter:UCERunner",
    finetune="finetune:UCEFineTune",
    fixture="fixture:build",
    engines=("helical",),
    options=(
        ModelOption(
            name="species",
            default="human",
            choices=tuple(files.SPECIES_FILES),
            help="species of the cells: picks the ESM2 protein embeddings (and the chromosome table rows) "
            "UCE maps genes through",
        ),
    ),  # fmt: skip
    models=(
        ModelSpec(
            name="4layer_model",
            family="uce",
            helical_model_name="4layer_model",
            embedding_dim=1280,
            profile=any_device("fp32", batch_size=24, memory_cap_gb=16),
            description="UCE, 4 layers (650 M parameters with the token table), ESM2 protein embeddings; CLS-token "
            "cell embedding",
        ),
        ModelSpec(
            name="33l_8ep_1024t_1280",
            family="uce",
            helical_model_name="33l_8ep_1024t_1280",
            embedding_dim=1280,
            profile=gpu_only("fp32", batch_size=16, memory_cap_gb=24),
            description="UCE, 33 layers, ESM2 protein embeddings; CLS-token cell embedding",
        ),
    ),  # fmt: skip
    bf16_unsupported="helical's UCE.get_embeddings turns the forward pass's output into numpy as it comes "
    "(embedding.detach().cpu().numpy(), helical/models/uce/model.py:275), and numpy has no bfloat16: under bf16 "
    "autocast that raises 'TypeError: Got unsupported ScalarType BFloat16' (measured on the CPU fixture)",
    quirks=(
        "process_data writes its count matrix to ./<name>_counts.npz and get_embeddings reads it back from the "
        "working directory: each call runs in its own temporary folder (tempfile.TemporaryDirectory + chdir)",
        "helical writes the count file from the unfiltered matrix but reads it with the shape of the genes that "
        "have protein embeddings, so one unknown gene shifts every cell's counts: the adapter passes only genes "
        "of the vocabulary (symbols, after helical's own Ensembl -> symbol mapping)",
        "helical's padding mask is additive 0/1 (src_key_padding_mask=1 - mask), so padded positions are "
        "attended to and a cell's embedding depended on the longest cell of its batch: the adapter batches only "
        "cells of equal sentence length (no padding at all); the result is the cell's embedding on its own",
        "genes are sampled per cell with a fixed-seed generator (numpy default_rng(42), helical's "
        "uce_dataset.py), so the run seed does not enter and a cell's sample does not depend on its shard",
        "helical densifies the count matrix (X.toarray()): sparse input is converted to CSR first; the memory "
        "cap covers a dense shard",
        "get_embeddings does not autocast: fp32 by default; fp16/bf16 on a GPU run under torch.autocast",
        "the species option selects helical's protein embedding file (UCEConfig species), so it is part of "
        "the cache files and of the run key",
        "helical samples each cell's genes with default_rng(42).choice over the column index, so the column order "
        "picked the sample (issue 22: min per-cell cosine 0.20, median 0.95, for a permuted Ensembl copy of the "
        "sample); the genes reach helical as symbols in sorted order (runner.canonical_input): identical on every "
        "layout",
    ),
)
