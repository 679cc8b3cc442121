"""Evo 2 (helical.models.evo_2): the five models helical 3.1.4's Evo2Config knows. CUDA only (see
`cpu_unsupported`). Embeddings: helical's get_embeddings returns the per-token states of the config's default
layer; the adapter mean-pools each sequence's own tokens (original_lengths)."""

from __future__ import annotations

from ..family import ModelFamily
from ..profiles import ModelSpec, gpu_only
from ..sequence import SEQUENCE_OPTIONS, no_vocabulary
from . import files

#: model -> (hidden size, max_seqlen, memory cap GB); helical's Evo2Config.model_map
MODELS = {
    "evo2-1b-base": (1920, 8192, 16),
    "evo2-7b-base": (4096, 8192, 48),
    "evo2-7b": (4096, 1048576, 64),
    "evo2-40b-base": (8192, 8192, 160),
    "evo2-40b": (8192, 1048576, 192),
}


def _evo2(name: str, dim: int, context: int, memory: int) -> ModelSpec:
    profile = gpu_only("bf16", batch_size=1, memory_cap_gb=memory).model_copy(update={"modality": "dna_sequence"})
    what = f"Evo 2 {name.removeprefix('evo2-')}, {context:,} nt context"
    return ModelSpec(name=name, family="evo_2", helical_model_name=name, embedding_dim=dim, profile=profile,
                     description=what, max_length=context)  # fmt: skip


FAMILY = ModelFamily(
    name="evo_2",
    package=__name__,
    default_model="evo2-1b-base",
    files=files.files,
    vocabulary=no_vocabulary,
    options=SEQUENCE_OPTIONS,
    adapter="adapter:Evo2Runner",
    fixture=None,
    hub_repo="arcinstitute/evo2_1b_base",
    cpu_unsupported=(
        "helical's Evo 2 needs CUDA: helical/models/evo_2/model.py:24-33 raises ImportError without the vortex "
        "package (StripedHyena; its wheels need flash-attn / transformer-engine CUDA kernels, not installed), "
        "Evo2Config hard-codes device 'cuda' (evo_2_config.py:329) and the 1b/7b configs set use_flash_attn=True"
    ),
    models=tuple(_evo2(name, *values) for name, values in MODELS.items()),
)
