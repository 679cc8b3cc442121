"""Cell2Sentence (helical.models.c2s): cells as sentences of ranked gene names, embedded by a Gemma-2 LLM.

helical loads C2S-Scale from the Hugging Face hub (vandijklab/C2S-Scale-Gemma-2-2B / -27B) with transformers,
cache_dir=<models dir>/c2s_model_<size>; the adapter keeps it offline. Genes are symbols (Ensembl ids map
through helical's table). adapter.py says what is done about helical's habits.
"""

from __future__ import annotations

from ..family import ModelFamily
from ..profiles import ModelOption, ModelSpec, gpu_only
from . import files

FAMILY = ModelFamily(
    name="c2s",
    package=__name__,
    default_model="c2s-scale-gemma-2-2b",
    files=files.files,
    vocabulary=files.vocabulary,
    hub_repo=files.REPOS["2B"][0],
    adapter="adapter:Cell2SenRunner",
    fixture="fixture:build",
    engines=("helical",),
    # a 2B / 27B language model over prompts of hundreds of genes (~2 tokens a gene): GPU by profile; helical's
    # code runs on a CPU (float32, sdpa), which the fixture tests use (--device cpu for real weights: slow)
    models=(
        ModelSpec(
            name="c2s-scale-gemma-2-2b",
            family="c2s",
            helical_model_name="2B",
            embedding_dim=2304,
            profile=gpu_only("bf16", batch_size=8, memory_cap_gb=16),
            description="C2S-Scale Gemma-2 2B: mean of the last hidden layer over the prompt (default)",
        ),
        ModelSpec(
            name="c2s-scale-gemma-2-27b",
            family="c2s",
            helical_model_name="27B",
            embedding_dim=4608,
            profile=gpu_only("bf16", batch_size=2, memory_cap_gb=80),
            description="C2S-Scale Gemma-2 27B (about 55 GB of GPU memory in bf16)",
        ),
    ),  # fmt: skip
    options=(
        ModelOption(
            name="organism",
            default="human",
            help="the organism named in the prompt ('... expression levels in a {organism} cell')",
        ),
        ModelOption(
            name="max_genes",
            default="all",
            help="how many top-expressed genes make the cell sentence: all (helical's default) or a number",
        ),
        ModelOption(
            name="aggregation_type",
            default="mean_pool",
            choices=("mean_pool", "last_token"),
            help="mean of the last layer over the prompt's tokens, or the last token's state",
        ),
    ),  # fmt: skip
    quirks=(
        "transformers loads from the hub cache under <models dir>/c2s_model_<size>: HF_HUB_OFFLINE and "
        "TRANSFORMERS_OFFLINE are set before helical loads",
        "the tokenizer pads on the right: with Gemma's left padding helical's last_token index "
        "(attention_mask.sum() - 1) lands inside the prompt, at a place set by the batch mates (1.2 max abs diff)",
        "Ensembl ids are turned into symbols for the sentence (helical's table); genes without a symbol are left out",
        "the organism always comes from the run's option (helical otherwise reads adata.uns/obs and keeps the first "
        "shard's)",
        "float32 on a CPU, bfloat16 on a GPU (helical's two dtypes)",
        "helical ranks genes with np.argsort(expr)[::-1]: genes of equal counts follow their column order into the "
        "sentence (issue 22: min per-cell cosine 0.86 for a permuted copy); the genes reach helical as symbols in "
        "sorted order (runner.canonical_input): identical on every layout",
    ),
)
