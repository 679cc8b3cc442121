"""Geneformer (helical.models.geneformer): every model helical 3.1.4 accepts, each with its profile.

Per-cell by construction: helical's tokenizer normalises each cell by its own total count and the gene
medians of the vocabulary, ranks genes within the cell and truncates to the model's input size; the cell
embedding is the mean over that cell's own (unpadded) tokens, so sharding does not change it.
"""

from __future__ import annotations

from ..family import ModelFamily
from ..profiles import ModelSpec, ResourceProfile, any_device, gpu_only
from . import files

# fp16 on GPU is what helical's own get_embeddings autocasts to; memory caps are host RAM for one shard
# process with the default batch size (model + tokenised shard), rounded up generously. The fast engine is
# the default (helical's tokens, weights and pooling; per-cell cosine >= 0.9999 against get_embeddings,
# tests/integration/test_fast_equivalence.py).


def _gf(name: str, dim: int, profile: ResourceProfile, what: str) -> ModelSpec:
    return ModelSpec(
        name=name, family="geneformer", helical_model_name=name, embedding_dim=dim,
        profile=profile.model_copy(update={"engine": "fast"}), description=f"Geneformer {what}",
    )  # fmt: skip


FAMILY = ModelFamily(
    name="geneformer",
    package=__name__,
    default_model="gf-12L-38M-i4096",
    files=files.files,
    vocabulary=files.vocabulary,
    engines=("helical", "fast"),
    adapter="adapter:GeneformerRunner",
    finetune="finetune:GeneformerFineTune",
    models=(
        _gf(
            "gf-6L-10M-i2048", 256, any_device("fp16", batch_size=24, memory_cap_gb=4), "v1, 6 layers, 2048 genes/cell"
        ),
        _gf(
            "gf-12L-40M-i2048",
            512,
            any_device("fp16", batch_size=24, memory_cap_gb=6),
            "v1, 12 layers, 2048 genes/cell",
        ),
        _gf(
            "gf-12L-40M-i2048-CZI-CellxGene",
            512,
            any_device("fp16", batch_size=24, memory_cap_gb=6),
            "v1, 12 layers, trained on CZI CELLxGENE",
        ),
        _gf(
            "gf-12L-38M-i4096",
            512,
            any_device("fp16", batch_size=16, memory_cap_gb=8),
            "v2, 12 layers, 4096 genes/cell (default)",
        ),
        _gf(
            "gf-12L-38M-i4096-CLcancer",
            512,
            any_device("fp16", batch_size=16, memory_cap_gb=8),
            "v2, cancer continual learning",
        ),
        _gf("gf-20L-151M-i4096", 896, gpu_only("fp16", batch_size=8, memory_cap_gb=16), "v2, 20 layers"),
        _gf("gf-12L-104M-i4096", 768, gpu_only("fp16", batch_size=8, memory_cap_gb=12), "v3, 12 layers"),
        _gf(
            "gf-12L-104M-i4096-CLcancer",
            768,
            gpu_only("fp16", batch_size=8, memory_cap_gb=12),
            "v3, cancer continual learning",
        ),
        _gf("gf-18L-316M-i4096", 1152, gpu_only("fp16", batch_size=4, memory_cap_gb=24), "v3, 18 layers"),
    ),  # fmt: skip
    quirks=(
        "the fast engine (default) tokenises with a vectorised copy of helical's tokenizer (identical tokens) "
        "and runs the encoder without the MLM head: docs/fast_path.md",
    ),
)
