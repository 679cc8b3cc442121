"""TranscriptFormer (helical.models.transcriptformer): generative cross-species cell models."""

from __future__ import annotations

from ..family import ModelFamily
from ..profiles import ModelSpec, gpu_only
from . import files

FAMILY = ModelFamily(
    name="transcriptformer",
    package=__name__,
    default_model="tf_sapiens",
    files=files.files,
    vocabulary=files.vocabulary,
    adapter="adapter:TranscriptFormerRunner",
    fixture=None,
    models=(
        ModelSpec(
            name="tf_sapiens", family="transcriptformer", helical_model_name="tf_sapiens", embedding_dim=2048,
            profile=gpu_only("bf16", batch_size=8, memory_cap_gb=24),
            description="TranscriptFormer trained on human cells",
        ),
        ModelSpec(
            name="tf_exemplar", family="transcriptformer", helical_model_name="tf_exemplar", embedding_dim=2048,
            profile=gpu_only("bf16", batch_size=8, memory_cap_gb=24),
            description="TranscriptFormer trained on 5 model organisms",
        ),
        ModelSpec(
            name="tf_metazoa", family="transcriptformer", helical_model_name="tf_metazoa", embedding_dim=2048,
            profile=gpu_only("bf16", batch_size=8, memory_cap_gb=32),
            description="TranscriptFormer trained on 12 species",
        ),
    ),  # fmt: skip
)
