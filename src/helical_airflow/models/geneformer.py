"""Geneformer through helical: `Geneformer.process_data` then `get_embeddings`, one shard at a time.

Per-cell by construction, checked in tests: helical's tokenizer normalises each cell by its own total
count and the gene medians of the vocabulary, ranks genes within the cell and truncates to the model's
input size; cell embeddings are the mean over that cell's own (unpadded) tokens. Nothing depends on
the other cells of the shard, so sharding does not change the result.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from ..spec import Engine, Precision
from .runner import (
    clean_input,
    embed_known_cells,
    helical_prefix,
    is_ensembl,
    known_gene_mask,
    precision_scope,
    require_mapping,
)
from .vocab import read_vocabulary

if TYPE_CHECKING:
    import anndata

    from .profiles import ModelSpec

log = logging.getLogger(__name__)


class GeneformerRunner:
    engine: Engine = "helical"

    def __init__(
        self, spec: ModelSpec, device: str, precision: Precision, batch_size: int, seed: int,
        engine: Engine = "helical",
    ) -> None:
        from helical.models.geneformer import Geneformer, GeneformerConfig

        self.spec, self.device, self.precision, self.batch_size, self.seed = spec, device, precision, batch_size, seed
        self.engine = engine
        self.cache_dir = helical_prefix()
        self.vocab = read_vocabulary(spec, self.cache_dir)
        config = GeneformerConfig(
            model_name=spec.helical_model_name, batch_size=batch_size, device=device, emb_mode="cell"
        )
        self.model = Geneformer(config)

    @property
    def embedding_dim(self) -> int:
        return int(self.model.model.config.hidden_size)

    def embed(self, adata: anndata.AnnData) -> np.ndarray:
        data = clean_input(adata)
        names = list(data.var_names)
        require_mapping(self.cache_dir, not all(is_ensembl(n) for n in names), self.spec)
        mask = known_gene_mask(names, self.vocab.symbols, self.vocab.ensembl)
        return embed_known_cells(data, mask, self.embedding_dim, self._embed_helical, self.spec)

    def _embed_helical(self, data: anndata.AnnData) -> np.ndarray:
        if self.engine == "fast":  # same tokens and weights, faster tokeniser and forward pass (docs/fast_path.md)
            from .fast_geneformer import geneformer_embeddings
            from .tokenize_fast import geneformer_tokens

            tokens = geneformer_tokens(self.model, data, gene_names="index")
            return geneformer_embeddings(self.model, tokens, precision=self.precision)
        dataset = self.model.process_data(data, gene_names="index")
        with precision_scope(self.device, self.precision):
            return np.asarray(self.model.get_embeddings(dataset))
