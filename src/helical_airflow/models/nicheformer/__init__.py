"""Nicheformer (helical.models.nicheformer): single-cell and spatial omics encoder."""

from __future__ import annotations

from ..family import ModelFamily
from ..profiles import ModelSpec, any_device, gpu_only  # noqa: F401
from . import files

FAMILY = ModelFamily(
    name="nicheformer",
    package=__name__,
    default_model="nicheformer",
    files=files.files,
    vocabulary=files.vocabulary,
    fixture=None,
    models=(
        ModelSpec(
            name="nicheformer", family="nicheformer", helical_model_name="theislab/Nicheformer", embedding_dim=512,
            profile=any_device("fp32", batch_size=32, memory_cap_gb=8),
            description="Nicheformer, 12 layers, 49M parameters, human and mouse, dissociated and spatial",
        ),
    ),  # fmt: skip
)
