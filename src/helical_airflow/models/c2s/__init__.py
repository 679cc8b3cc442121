"""Cell2Sentence (helical.models.c2s): cells as sentences of ranked gene names, embedded by a Gemma-2 LLM."""

from __future__ import annotations

from ..family import ModelFamily
from ..profiles import ModelSpec, any_device, gpu_only  # noqa: F401
from . import files

FAMILY = ModelFamily(
    name="c2s",
    package=__name__,
    default_model="c2s-scale-gemma-2-2b",
    files=files.files,
    vocabulary=files.vocabulary,
    fixture=None,
    models=(
        ModelSpec(
            name="c2s-scale-gemma-2-2b", family="c2s", helical_model_name="2B", embedding_dim=2304,
            profile=gpu_only("bf16", batch_size=8, memory_cap_gb=16),
            description="C2S-Scale Gemma-2 2B",
        ),
    ),  # fmt: skip
)
