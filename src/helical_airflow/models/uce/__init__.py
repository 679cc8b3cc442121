"""UCE (helical.models.uce): Universal Cell Embeddings over ESM2 protein embeddings of each gene."""

from __future__ import annotations

from ..family import ModelFamily
from ..profiles import ModelOption, ModelSpec, any_device, gpu_only
from . import files

FAMILY = ModelFamily(
    name="uce",
    package=__name__,
    default_model="4layer_model",
    files=files.files,
    vocabulary=files.vocabulary,
    adapter="adapter:UCERunner",
    fixture=None,
    options=(
        ModelOption(name="species", default="human", choices=tuple(files.SPECIES_FILES),
                    help="species of the cells: picks the protein embeddings UCE maps genes through"),
    ),  # fmt: skip
    models=(
        ModelSpec(
            name="4layer_model", family="uce", helical_model_name="4layer_model", embedding_dim=1280,
            profile=any_device("fp16", batch_size=24, memory_cap_gb=12),
            description="UCE, 4 layers, ESM2 protein embeddings",
        ),
        ModelSpec(
            name="33l_8ep_1024t_1280", family="uce", helical_model_name="33l_8ep_1024t_1280", embedding_dim=1280,
            profile=gpu_only("fp16", batch_size=8, memory_cap_gb=24),
            description="UCE, 33 layers, ESM2 protein embeddings",
        ),
    ),  # fmt: skip
)
