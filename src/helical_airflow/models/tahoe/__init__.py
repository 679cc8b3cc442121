"""Tahoe-x1 (helical.models.tahoe): Tahoe Therapeutics' transformer, trained on Tahoe-100M and CELLxGENE.

helical loads it from the Hugging Face hub (tahoebio/Tahoe-x1); the adapter reads it offline from the hub cache
under `<models dir>/tahoe/hub`. Genes are Ensembl ids (symbols map through helical's table). The cell embedding
is the CLS token, L2-normalised by helical. adapter.py says what is done about helical's habits.
"""

from __future__ import annotations

from ..family import ModelFamily
from ..profiles import ModelSpec, any_device, gpu_only
from . import files

FAMILY = ModelFamily(
    name="tahoe",
    package=__name__,
    default_model="tahoe-x1-70m",
    files=files.files,
    vocabulary=files.vocabulary,
    hub_repo=files.REPO_ID,
    adapter="adapter:TahoeRunner",
    fixture="fixture:build",
    engines=("helical",),
    # bf16 on GPU: the checkpoints' own precision (model_config.yml: amp_bf16); widths from the published configs
    # (helical's TahoeConfig.model_map says 1024/1536 for 1b/3b, but the model is built from model_config.yml)
    models=(
        ModelSpec(
            name="tahoe-x1-70m",
            family="tahoe",
            helical_model_name="70m",
            embedding_dim=512,
            profile=any_device("bf16", batch_size=8, memory_cap_gb=8),
            description="Tahoe-x1 70M: 12 layers, width 512; CLS-token cell embedding",
        ),
        ModelSpec(
            name="tahoe-x1-1b",
            family="tahoe",
            helical_model_name="1b",
            embedding_dim=2048,
            profile=gpu_only("bf16", batch_size=8, memory_cap_gb=24),
            description="Tahoe-x1 1.3B: 24 layers, width 2048",
        ),
        ModelSpec(
            name="tahoe-x1-3b",
            family="tahoe",
            helical_model_name="3b",
            embedding_dim=2560,
            profile=gpu_only("bf16", batch_size=4, memory_cap_gb=48),
            description="Tahoe-x1 3B: 32 layers, width 2560 (trained with drug tokens; helical drops them)",
        ),
    ),  # fmt: skip
    quirks=(
        "loads from the Hugging Face hub (hf_hub_download, no cache_dir): the hub cache is pointed at "
        "<models dir>/tahoe/hub and the hub put offline before helical loads",
        "attn_impl='flash' only on CUDA with flash-attn's CUDA kernels, else 'torch'; helical imports flash_attn "
        "either way (modeling_mpt.py:6), so without the CUDA build FLASH_ATTENTION_TRITON_AMD_ENABLE=TRUE lets "
        "the package import (its Triton backend is never called)",
        "attn_impl='torch' attends to the batch's padding (from_hf forces use_attn_mask=False): batch size 1 then, "
        "so a cell never sees padding",
        "cells with more than 2048 expressed genes are sampled with a per-cell seed (the run's seed and the cell's "
        "counts) instead of the global RNG in dataset order",
        "get_embeddings autocasts to the checkpoint's precision (amp_bf16) even on a CPU: set to the run's",
        "DataLoader num_workers=0 (helical's default forks 8 workers per shard)",
    ),
)
