"""scGPT (helical.models.scgpt): the whole-human checkpoint helical ships, CLS-token cell embeddings.

Per-cell: emb_mode="cls" (helical's "cell" mode averages the padded batch, padding included), and helical
3.1.4 bins and samples each cell with its own fixed-seed generator (adapter.py says more).
"""

from __future__ import annotations

from ..family import ModelFamily
from ..profiles import ModelSpec, any_device
from . import files

FAMILY = ModelFamily(
    name="scgpt",
    package=__name__,
    default_model="scgpt",
    files=files.files,
    vocabulary=files.vocabulary,
    engines=("helical", "fast"),
    adapter="adapter:ScGPTRunner",
    finetune="finetune:ScGPTFineTune",
    models=(
        ModelSpec(
            name="scgpt",
            family="scgpt",
            helical_model_name="best_model",
            embedding_dim=512,
            profile=any_device("fp16", batch_size=24, memory_cap_gb=6, engine="fast"),
            description="scGPT whole-human continual pre-training checkpoint (scGPT_CP); CLS-token cell embedding",
        ),
    ),  # fmt: skip
    quirks=(
        "emb_mode='cls' so a cell's embedding does not depend on the cells padded into its batch",
        "the checkpoint's architecture is read from args.json beside best_model.pt; a tensor helical would skip "
        "silently (shape mismatch) fails with E223 instead",
        "gene order: helical's binning (_digitize) gives a value on a bin edge a random bin from default_rng(42) "
        "drawn in column order, and cells over 1,200 genes are sampled by position: a permuted copy of the sample "
        "gave min per-cell cosine 0.9994 (issue 22: 0.999062). The genes reach helical as symbols in sorted order "
        "(runner.canonical_input): identical on every layout",
    ),
)
