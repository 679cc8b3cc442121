"""Mamba2-mRNA (helical.models.mamba2_mrna): the one model helical 3.1.4 has (Mamba2mRNAConfig takes no model
name; the hub repo helical-ai/mamba2-mRNA). Runs on a CPU: helical loads transformers' own `Mamba2Model`
(helical/models/mamba2_mrna/model.py:57), whose CUDA kernels (mamba_ssm, causal_conv1d) are optional: each is
declared with `use_kernel_func_from_hub_with_fallback` (transformers/models/mamba2/modeling_mamba2.py:126-256) and
falls back to its PyTorch reference implementation when the package is missing
(transformers/integrations/hub_kernels.py:1018-1020; neither is installed here, and transformers logs "falling
back to its reference PyTorch implementation"). The context is helical's default max_length, 8,192 tokens, less
the [SEP] the tokenizer appends.
"""

from __future__ import annotations

from ..family import ModelFamily
from ..profiles import ModelSpec, any_device
from ..sequence import SEQUENCE_OPTIONS, no_vocabulary
from . import files

FAMILY = ModelFamily(
    name="mamba2_mrna",
    package=__name__,
    default_model="mamba2-mrna",
    files=files.files,
    vocabulary=no_vocabulary,
    options=SEQUENCE_OPTIONS,
    adapter="adapter:Mamba2mRNARunner",
    finetune="finetune:Mamba2mRNAFineTune",
    hub_repo=files.REPO,
    models=(
        ModelSpec(
            name="mamba2-mrna",
            family="mamba2_mrna",
            helical_model_name=files.REPO,
            # the width of the real model is not known here (its config.json is on the hub, unreachable): 256 is
            # Helix-mRNA's, unverified for Mamba2-mRNA; the runner reports the loaded model's hidden_size
            embedding_dim=256,
            profile=any_device("fp32", batch_size=8, memory_cap_gb=8).model_copy(update={"modality": "rna_sequence"}),
            description="Mamba2-mRNA, Mamba2 (transformers) over single nucleotides, 8,191 nt context",
            max_length=8191,
        ),  # fmt: skip
    ),
    quirks=(
        "helical's get_embeddings pools the [SEP] it masks: transformers' Mamba2 zeroes a masked token's mixer "
        "(input x 0, gate silu(0) = 0), so every sequence got the same vector (max pairwise difference 0.0 on the "
        "fixture); the adapter runs helical's model on helical's own batches and pools the last nucleotide (what "
        "helical's comment at model.py:175 says it meant)",
        "process_data pads every sequence to max_length (8,192 tokens): the adapter sets helical's input_size to "
        "each call's length (SequenceRunner gives one length per call), so nothing is padded",
    ),
)
