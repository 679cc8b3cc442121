"""HyenaDNA (helical.models.hyena_dna): both models helical 3.1.4 accepts. Plain torch (Hyena long convolutions,
no CUDA-only kernel: helical/models/hyena_dna/standalone_hyenadna.py imports torch and einops only), so it runs
on a CPU; the context is 1024 nucleotides (HyenaDNAConfig.model_map max_length).
"""

from __future__ import annotations

from ..family import ModelFamily
from ..profiles import ModelSpec, any_device
from ..sequence import SEQUENCE_OPTIONS, no_vocabulary
from . import files


def _hyena(name: str, dim: int, what: str) -> ModelSpec:
    profile = any_device("fp32", batch_size=16, memory_cap_gb=4).model_copy(update={"modality": "dna_sequence"})
    return ModelSpec(name=name, family="hyena_dna", helical_model_name=name, embedding_dim=dim, profile=profile,
                     description=f"HyenaDNA {what}", max_length=1024)  # fmt: skip


FAMILY = ModelFamily(
    name="hyena_dna",
    package=__name__,
    default_model="hyenadna-tiny-1k-seqlen",
    files=files.files,
    vocabulary=no_vocabulary,
    options=SEQUENCE_OPTIONS,
    adapter="adapter:HyenaDNARunner",
    finetune="finetune:HyenaDNAFineTune",
    models=(
        _hyena("hyenadna-tiny-1k-seqlen", 128, "tiny, 2 layers, d_model 128, 1k context (default)"),
        _hyena("hyenadna-tiny-1k-seqlen-d256", 256, "tiny, 2 layers, d_model 256, 1k context"),
    ),
    quirks=(
        "helical pads every sequence on the left to the longest of the call and returns per-token states of a causal "
        "model, so a padded sequence's states depend on its neighbours: the adapter gives helical sequences of one "
        "length at a time and mean-pools the tokens that are not padding",
    ),
)
