"""Cell2Sentence through helical: `Cell2Sen.process_data` (cells -> sentences of gene symbols ranked by
expression) then `get_embeddings` (the prompt through Gemma-2, last hidden layer pooled), one shard at a time.

What the adapter does about helical's habits (docs/models/c2s.md):
- Hub files: transformers' from_pretrained(cache_dir=<models dir>/c2s_model_<size>) would ask the hub for the
  latest revision; HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE (and huggingface_hub's constants, read at its import)
  are set before helical loads, so it reads the cached snapshot and nothing leaves the machine.
- Padding: Gemma's tokenizer pads on the left, and helical's last_token pooling takes index
  `attention_mask.sum() - 1`, the last token only with right padding (left: a token inside the prompt, chosen by
  the batch mates; measured 1.2 max abs diff across shardings). The tokenizer pads on the right: a causal model's
  real tokens never see the padding after them, both poolings are per cell (0.0 measured).
- Gene ids and order: the sentence is made of var_names ranked by expression, and helical's ranking
  (`np.argsort(expr)[::-1]`, model.py:274) orders genes of equal counts by their column: the file's column order
  picked the sentence (min per-cell cosine 0.86 between the sample and a permuted copy, issue 22). The base class's
  canonical_input hands over the vocabulary's symbols (Ensembl ids through helical's table, versions stripped),
  sorted, genes outside the vocabulary left out: ties fall in that order, whatever the file's layout.
- Organism: helical takes it from adata.uns/obs when not given (and keeps the first shard's for later shards);
  it always comes from the run's `organism` option. max_genes and aggregation_type come from the options too.
- Attention: helical asks transformers for attn_implementation="sdpa" (helical/models/c2s/model.py:74), which
  transformers 5.23 refuses for Gemma-2 (modeling_gemma2.py:352 `_supports_sdpa = False  # sdpa does not support
  softcapping`: ValueError at load, on every device). While helical loads, its from_pretrained call gets
  "eager" instead of "sdpa" (Gemma-2's own attention, logit softcapping included); flash_attention_2, asked for
  with use_flash_attn on CUDA, is passed through.
- Precision: helical loads float32 on a CPU (it refuses bf16 there) and bfloat16 on a GPU: the run's precision
  picks float32 or bfloat16.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from ...settings import export
from .. import cache
from ..runner import HelicalRunner
from . import files

if TYPE_CHECKING:
    import anndata

log = logging.getLogger(__name__)


def go_offline() -> None:
    import huggingface_hub.constants as hub

    export("HF_HUB_OFFLINE", "1")
    export("TRANSFORMERS_OFFLINE", "1")
    hub.HF_HUB_OFFLINE = True


class _EagerInsteadOfSdpa:
    """transformers' AutoModelForCausalLM as helical's c2s module sees it, "sdpa" turned into "eager"."""

    def __init__(self, auto: Any) -> None:
        self.auto = auto

    def from_pretrained(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("attn_implementation") == "sdpa":
            kwargs["attn_implementation"] = "eager"
        return self.auto.from_pretrained(*args, **kwargs)


@contextlib.contextmanager
def eager_attention() -> Iterator[None]:
    import helical.models.c2s.model as c2s_model

    auto = c2s_model.AutoModelForCausalLM
    c2s_model.AutoModelForCausalLM = _EagerInsteadOfSdpa(auto)
    try:
        yield
    finally:
        c2s_model.AutoModelForCausalLM = auto


class Cell2SenRunner(HelicalRunner):
    def load_model(self) -> Any:
        from helical.models.c2s import Cell2Sen, Cell2SenConfig

        go_offline()
        config = Cell2SenConfig(
            batch_size=self.batch_size, organism=self.options["organism"], max_genes=files.max_genes(self.options),
            aggregation_type=self.options["aggregation_type"], model_size=self.spec.helical_model_name,
            dtype="float32" if self.precision == "fp32" or self.device == "cpu" else "bfloat16",
            device=self.device, seed=self.seed,
        )  # fmt: skip
        root = cache.models_dir(self.cache_dir)
        if str(config.config["model_path"]) != str(root / files.REPOS[self.spec.helical_model_name][1]):
            raise RuntimeError(f"helical reads c2s from {config.config['model_path']}, not under {root}")
        with eager_attention():
            model = Cell2Sen(configurer=config)
        if model.attn_implementation == "sdpa":
            model.attn_implementation = "eager"  # what get_embeddings restores after output_attentions
        model.tokenizer.padding_side = "right"
        # weights loaded in bfloat16 cannot give an fp32 reference without a second load of a multi-GB model: the
        # agreement check (agreement.py) records these shards as not measured
        self.fixed_weights_dtype = None if config.config["dtype"] == "float32" else "bf16"
        return model

    @property
    def embedding_dim(self) -> int:
        return int(self.model.model.config.hidden_size)

    def _embed_helical(self, data: anndata.AnnData) -> np.ndarray:
        # canonical_input made var_names the vocabulary's own symbols, sorted, unknown genes left out: the sentence
        # is made of them, and helical's argsort breaks ties of equal expression in that (canonical) order
        self.model.organism = self.options["organism"]  # process_data keeps what it found in a previous shard
        dataset = self.model.process_data(data)
        return np.asarray(self.model.get_embeddings(dataset))
