"""Helix-mRNA (helical.models.helix_mrna): the one model helical 3.1.4 has (HelixmRNAConfig takes no model name;
the hub repo helical-ai/Helix-mRNA), a hybrid of Mamba2, attention and MLP blocks in helical's own modeling code.
Runs on a CPU: modeling_helix_mrna.py imports mamba_ssm and causal_conv1d only when installed (:50-62) and takes
the CUDA path only when both are and the weights are on CUDA (`is_fast_path_available and "cuda" in
self.in_proj.weight.device.type`, :64-66, :1152); otherwise `torch_forward`, plain PyTorch (:958). Attention is
flash_attention_2 only on CUDA with flash_attn installed, else sdpa in float32 (helical/utils/attn_backend.py,
model.py:64). The context is helical's default max_length, 12,288 tokens, less the [SEP] the tokenizer appends.
"""

from __future__ import annotations

from ..family import ModelFamily
from ..profiles import ModelSpec, any_device
from ..sequence import SEQUENCE_OPTIONS, no_vocabulary
from . import files

FAMILY = ModelFamily(
    name="helix_mrna",
    package=__name__,
    default_model="helix-mrna",
    files=files.files,
    vocabulary=no_vocabulary,
    options=SEQUENCE_OPTIONS,
    adapter="adapter:HelixmRNARunner",
    finetune="finetune:HelixmRNAFineTune",
    hub_repo=files.REPO,
    models=(
        ModelSpec(
            name="helix-mrna",
            family="helix_mrna",
            helical_model_name=files.REPO,
            embedding_dim=256,  # helical's Helix-mRNA notebook: "our embedding dimension is 256"
            profile=any_device("fp32", batch_size=4, memory_cap_gb=16).model_copy(update={"modality": "rna_sequence"}),
            description="Helix-mRNA, Mamba2 + attention hybrid over single nucleotides, 12,287 nt context",
            max_length=12287,
        ),  # fmt: skip
    ),
    quirks=(
        "get_embeddings returns every token's state: the adapter pools the last nucleotide, as helical's Helix-mRNA "
        "notebook does (embeddings[:, -2, :]), never the masked [SEP]",
        "helical pads on the left to the longest of the call (a padded record's states change: 0.12 max abs "
        "difference on the fixture): SequenceRunner gives helical sequences of one length per call",
        "in batches of 2+ helical's CPU Mamba2 mixer masks the [SEP], and its chunked scan lets it reach earlier "
        "chunks (1.0e-3 max abs change of a record's state, float64 the same): helical's batch size is 1",
        "HelixmRNAPretrainedConfig's use_cache=True breaks the non-flash forward for any length but 4 "
        "(modeling_helix_mrna.py:1601-1611, 1729): the adapter turns use_cache off",
        "helical's forward gives every block the embeddings and keeps the last block's output only "
        "(modeling_helix_mrna.py:1643-1683): that is the model as helical ships it; the adapter does not change it",
    ),
)
