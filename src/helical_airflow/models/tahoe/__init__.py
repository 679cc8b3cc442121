"""Tahoe-x1 (helical.models.tahoe): transformer foundation model by Tahoe Therapeutics."""

from __future__ import annotations

from ..family import ModelFamily
from ..profiles import ModelSpec, any_device, gpu_only  # noqa: F401
from . import files

FAMILY = ModelFamily(
    name="tahoe",
    package=__name__,
    default_model="tahoe-x1-70m",
    files=files.files,
    vocabulary=files.vocabulary,
    fixture=None,
    models=(
        ModelSpec(
            name="tahoe-x1-70m", family="tahoe", helical_model_name="70m", embedding_dim=512,
            profile=any_device("bf16", batch_size=8, memory_cap_gb=8),
            description="Tahoe-x1 70M, 12 layers",
        ),
    ),  # fmt: skip
)
