"""GenePT (helical.models.genept): cells as expression-weighted GPT-3.5 embeddings of gene descriptions."""

from __future__ import annotations

from ..family import ModelFamily
from ..profiles import ModelSpec, any_device, gpu_only  # noqa: F401
from . import files

FAMILY = ModelFamily(
    name="genept",
    package=__name__,
    default_model="genept-gpt3.5",
    files=files.files,
    vocabulary=files.vocabulary,
    fixture=None,
    models=(
        ModelSpec(
            name="genept-gpt3.5", family="genept", helical_model_name="gpt3.5", embedding_dim=1536,
            profile=any_device("fp32", batch_size=24, memory_cap_gb=6),
            description="GenePT w/ GPT-3.5 text embeddings of NCBI gene summaries",
        ),
    ),  # fmt: skip
)
