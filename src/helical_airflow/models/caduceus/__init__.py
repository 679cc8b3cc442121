"""Caduceus (helical.models.caduceus): the six models helical 3.1.4 accepts. CUDA only (see `cpu_unsupported`).
helical's get_embeddings pools the last hidden state ("mean" by default) itself."""

from __future__ import annotations

from ..family import ModelFamily
from ..profiles import ModelSpec, gpu_only
from ..sequence import SEQUENCE_OPTIONS, no_vocabulary
from . import files

#: model -> (embedding width, context); helical's CaduceusConfig.model_map
MODELS = {
    "caduceus-ph-4L-seqlen-1k-d118": (118, 1024),
    "caduceus-ph-4L-seqlen-1k-d256": (256, 1024),
    "caduceus-ph-16L-seqlen-131k-d256": (256, 131072),
    "caduceus-ps-4L-seqlen-1k-d118": (118, 1024),
    "caduceus-ps-4L-seqlen-1k-d256": (256, 1024),
    "caduceus-ps-16L-seqlen-131k-d256": (256, 131072),
}


def _caduceus(name: str, dim: int, context: int) -> ModelSpec:
    long = context > 1024
    profile = gpu_only("fp32", batch_size=2 if long else 16, memory_cap_gb=16 if long else 8).model_copy(
        update={"modality": "dna_sequence"}
    )
    kind = "RC-equivariant (ps)" if "-ps-" in name else "RC-data-augmented (ph)"
    return ModelSpec(name=name, family="caduceus", helical_model_name=name, embedding_dim=dim, profile=profile,
                     description=f"Caduceus {kind}, d{dim}, {context:,} nt context", max_length=context)  # fmt: skip


FAMILY = ModelFamily(
    name="caduceus",
    package=__name__,
    default_model="caduceus-ph-4L-seqlen-1k-d118",
    files=files.files,
    vocabulary=no_vocabulary,
    options=SEQUENCE_OPTIONS,
    adapter="adapter:CaduceusRunner",
    fixture=None,
    finetune_unsupported=(
        "Caduceus needs CUDA (its Mamba kernels, see cpu_unsupported), so helical's CaduceusFineTuningModel cannot "
        "train on a CPU and is not wired into `finetune` yet (no GPU to test it on)"
    ),
    cpu_unsupported=(
        "helical's Caduceus needs CUDA: Caduceus.__init__ raises 'Caduceus requires a CUDA device' when "
        "torch.cuda.is_available() is False (helical/models/caduceus/model.py:55-58), CaduceusConfig hard-codes "
        "device 'cuda' (caduceus_config.py:94), and modeling_caduceus.py:12-24 imports mamba_ssm's selective-scan "
        "Mamba and its Triton layer-norm kernels (mamba_ssm is not installed; it builds only against CUDA)"
    ),
    models=tuple(_caduceus(name, dim, ctx) for name, (dim, ctx) in MODELS.items()),
)
