"""Nicheformer through helical: `Nicheformer.process_data` then `get_embeddings`, one shard at a time.

What the adapter does about helical's habits:
- the tokenizer reads the context tokens from obs columns `specie`, `assay` and `modality`, which the base
  class's clean_input drops (embeddings must depend on the counts alone). They come from the run's model
  options instead, written into the clean AnnData for every cell, so all three context tokens are always there.
- helical's get_embeddings drops the first three positions when with_context is false, whether or not context
  tokens were prepended (with none it would drop the cell's three top genes): always writing the three
  columns makes those three positions exactly the context tokens.
- every cell is padded to the model's 1,500 positions by the tokenizer and the mean runs over all of them, padding
  included, but the padding is the cell's own (fixed length, masked from attention): per-cell by design.
- helical's get_embeddings does not autocast; a GPU run with fp16/bf16 asked for runs under torch.autocast.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from ..runner import HelicalRunner

if TYPE_CHECKING:
    import anndata

log = logging.getLogger(__name__)

#: model option -> the obs column helical's NicheformerTokenizer reads it from
CONTEXT_COLUMNS = {"species": "specie", "technology": "assay", "modality": "modality"}


class NicheformerRunner(HelicalRunner):
    def load_model(self) -> Any:
        from helical.models.nicheformer import Nicheformer, NicheformerConfig

        config = NicheformerConfig(
            model_name=self.spec.helical_model_name, batch_size=self.batch_size, device=self.device,
            layer=int(self.options["layer"]), with_context=self.options["with_context"] == "true",
        )  # fmt: skip
        model = Nicheformer(config)
        tokenizer = model.tokenizer
        # without its reference AnnData the tokenizer would number genes by their column in the input: refuse
        if tokenizer._reference_model_cache is None:
            raise RuntimeError(f"helical could not read Nicheformer's reference model.h5ad in {tokenizer.name_or_path}")
        # the options' values are the tokenizer's own keys (a value it does not know would become a PAD token)
        known = {"species": tokenizer.species_dict, "technology": tokenizer.technology_dict,
                 "modality": tokenizer.modality_dict}  # fmt: skip
        for option, table in known.items():
            if self.options[option] not in table:
                raise RuntimeError(f"helical's Nicheformer tokenizer has no {option} token {self.options[option]!r}")
        layers = int(model.model.config.nlayers)
        if not -layers <= int(self.options["layer"]) < layers:
            raise RuntimeError(f"Nicheformer layer {self.options['layer']} is outside this model's {layers} layers")
        return model

    @property
    def embedding_dim(self) -> int:
        return int(self.model.model.config.dim_model)

    def _embed_helical(self, data: anndata.AnnData) -> np.ndarray:
        for option, column in CONTEXT_COLUMNS.items():
            data.obs[column] = self.options[option]
        dataset = self.model.process_data(data, gene_names="index")
        with self._autocast():
            return np.asarray(self.model.get_embeddings(dataset), dtype=np.float32)

    def _autocast(self) -> Any:
        if self.device == "cpu" or self.precision == "fp32":
            return contextlib.nullcontext()
        import torch

        return torch.autocast("cuda", dtype={"fp16": torch.float16, "bf16": torch.bfloat16}[self.precision])
