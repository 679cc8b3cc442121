"""Geneformer through helical: `Geneformer.process_data` then `get_embeddings`, one shard at a time.

Per-cell by construction, checked in tests: helical's tokenizer normalises each cell by its own total
count and the gene medians of the vocabulary, ranks genes within the cell and truncates to the model's
input size; cell embeddings are the mean over that cell's own (unpadded) tokens. Nothing depends on
the other cells of the shard, so sharding does not change the result.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from ..runner import HelicalRunner, precision_scope
from .fast import geneformer_embeddings
from .tokenize_fast import geneformer_tokens

if TYPE_CHECKING:
    import anndata

log = logging.getLogger(__name__)


class GeneformerRunner(HelicalRunner):
    # helical's tokenize_anndata divides each cell by n_counts = X.sum(axis=1) over every input gene
    library_size_from_all_genes = True

    def load_model(self) -> Any:
        from helical.models.geneformer import Geneformer, GeneformerConfig

        config = GeneformerConfig(
            model_name=self.spec.helical_model_name, batch_size=self.batch_size, device=self.device, emb_mode="cell"
        )
        return Geneformer(config)

    @property
    def embedding_dim(self) -> int:
        return int(self.model.model.config.hidden_size)

    def _embed_helical(self, data: anndata.AnnData) -> np.ndarray:
        if self.engine == "fast":  # same tokens and weights, faster tokeniser and forward pass (docs/fast_path.md)
            tokens = geneformer_tokens(self.model, data, gene_names="index")
            return geneformer_embeddings(self.model, tokens, precision=self.precision)
        dataset = self.model.process_data(data, gene_names="index")
        with precision_scope(self.device, self.precision):
            return np.asarray(self.model.get_embeddings(dataset))
