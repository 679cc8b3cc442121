"""GenePT through helical: cells as the L2-normalised, expression-weighted sum of GenePT's gene vectors.

helical's `get_embeddings` multiplies the log-normalised counts (normalize_total to 1e4, log1p) of the genes
found in its table by their vectors and L2-normalises each cell. Its `process_data` first keeps only the shard's
2,000 highly variable genes (scanpy seurat_v3 over all the shard's cells), so a cell's embedding would depend
on its shard mates. The default `genes=all` runs process_data's per-cell steps (helical's ensure_rna_data_validity
and ensure_gene_symbols, scanpy's normalize_total and log1p, as process_data calls them) without that
selection, then helical's own get_embeddings: per-cell. `genes=hvg` runs helical's process_data verbatim
(shard-dependent; docs/models/genept.md).

Also: helical reads `X.toarray()` (sparse only), so X is handed over as float32 CSR; it computes on the CPU
whatever the device; and it rebuilds the vector matrix from the JSON lists on every call, so cells go to it in
chunks of `batch_size` (memory bounded, identical results: per-cell arithmetic).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from ..runner import HelicalRunner

if TYPE_CHECKING:
    import anndata

log = logging.getLogger(__name__)


class GenePTRunner(HelicalRunner):
    # normalize_total (per-cell steps and helical's process_data alike) sums every input gene
    library_size_from_all_genes = True

    def load_model(self) -> Any:
        from helical.models.genept import GenePT, GenePTConfig

        config = GenePTConfig(model_name=self.spec.helical_model_name, batch_size=self.batch_size, device=self.device)
        model = GenePT(config)
        self._dim = len(next(iter(model.embeddings.values()))["embeddings"])  # helical's config says 512: wrong
        return model

    @property
    def embedding_dim(self) -> int:
        return self._dim

    def _embed_helical(self, data: anndata.AnnData) -> np.ndarray:
        data.X = sp.csr_matrix(data.X, dtype=np.float32)
        if self.options["genes"] == "hvg":  # helical's own selection over the whole shard
            return np.asarray(self.model.get_embeddings(self.model.process_data(data, gene_names="index")))
        processed = self._per_cell(data)
        step = max(1, self.batch_size)
        chunks = [self.model.get_embeddings(processed[i : i + step]) for i in range(0, processed.n_obs, step)]
        return np.vstack([np.asarray(c, dtype=np.float32) for c in chunks])

    def _per_cell(self, data: anndata.AnnData) -> anndata.AnnData:
        """helical's GenePT.process_data without its highly-variable-gene selection across the shard's cells."""
        import scanpy as sc
        from helical.utils.mapping import ensure_gene_symbols

        self.model.ensure_rna_data_validity(data, "index", True)
        data = ensure_gene_symbols(data, "index")
        sc.pp.normalize_total(data, target_sum=1e4)
        sc.pp.log1p(data)
        return data
