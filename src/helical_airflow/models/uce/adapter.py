"""UCE through helical: `UCE.process_data` then `get_embeddings`, one shard at a time.

What the adapter does about helical 3.1.4's habits (helical/models/uce/):
- process_data writes the shard's counts to `./<name>_counts.npz` (uce_utils.prepare_expression_counts_file)
  and the dataset reads that file back, from the working directory, in every __getitem__: each call runs in its
  own temporary folder (never a shared name), entered for process_data and get_embeddings both.
- process_data writes that file from the matrix of all input genes but reads it with the shape of the genes
  that have protein embeddings (model.py: `gene_expression = adata.X.toarray()` vs `shapes_dict` from
  `filtered_adata`), so a single gene outside the vocabulary shifts every cell's counts. Only vocabulary genes
  are passed (the base class's canonical_input: the vocabulary's symbols, Ensembl ids through helical's table),
  so helical filters nothing.
- the padding mask is additive (uce_model.py: `src_key_padding_mask=(1 - mask)` with a float mask adds +1 to
  padded keys instead of masking them), so a cell's embedding depended on the longest cell of its batch.
  Cells are batched only with cells of the same sentence length (helical's collator then cuts the batch to that
  length: no padding), one get_embeddings call per length; rows go back in input order.
- genes are sampled per cell with numpy default_rng(42) (uce_dataset.py: `generator.choice(np.arange(len(weights)),
  p=weights)`), so a cell's sentence depends on its counts alone, and the sentence lengths are read from helical's
  own dataset items. The draw is over the column index: the file's column order picked each cell's sample (min
  per-cell cosine 0.20, median 0.95, between the sample and a permuted copy with Ensembl ids, issue 22). The
  genes reach helical in canonical order (canonical_input: symbols, sorted), so the same cells draw the same
  sample whatever the file's layout.
- a fixture's tiny checkpoint comes with `uce/<model>.args.json`, the UCEConfig settings it was built with;
  real caches have none and run helical's defaults.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from .. import cache
from ..runner import HelicalRunner, precision_scope, private_workdir
from . import files

if TYPE_CHECKING:
    import anndata

log = logging.getLogger(__name__)

#: UCEConfig arguments a fixture's args.json may set (n_layers is set in the built config: UCEConfig derives it
#: from the model name)
CONFIG_KEYS = ("token_dim", "d_hid", "output_dim", "sample_size", "pad_length", "CHROM_TOKEN_OFFSET")


def _cells(dataset: Any, indices: list[int]) -> Any:
    """The cells `indices` of helical's UCEDataset, with its collator (what get_embeddings batches with)."""
    from torch.utils.data import Dataset

    class Cells(Dataset):
        collator_fn = dataset.collator_fn

        def __len__(self) -> int:
            return len(indices)

        def __getitem__(self, i: int) -> Any:
            return dataset[indices[i]]

    return Cells()


class UCERunner(HelicalRunner):
    def load_model(self) -> Any:
        from helical.models.uce import UCE, UCEConfig

        name = self.spec.helical_model_name
        args_path = cache.models_dir(self.cache_dir) / files.args_file(name)
        args = json.loads(args_path.read_text()) if args_path.is_file() else {}
        config = UCEConfig(
            model_name=name, batch_size=self.batch_size, species=self.options["species"],
            device="cuda" if self.device.startswith("cuda") else "cpu",
            **{k: int(args[k]) for k in CONFIG_KEYS if k in args},
        )  # fmt: skip
        if "n_layers" in args:
            config.config["n_layers"] = int(args["n_layers"])
        return UCE(configurer=config)

    @property
    def embedding_dim(self) -> int:
        return int(self.model.config["output_dim"])

    def _known_genes(self, data: anndata.AnnData) -> anndata.AnnData:
        """CSR counts of the vocabulary's genes (canonical_input already made them symbols, known genes only)."""
        if not sp.issparse(data.X) or not sp.isspmatrix_csr(data.X):
            data.X = sp.csr_matrix(data.X)  # helical calls X.toarray()
        return data

    def _embed_helical(self, data: anndata.AnnData) -> np.ndarray:
        import torch

        data = self._known_genes(data)
        out = np.empty((data.n_obs, self.embedding_dim), dtype=np.float32)
        with private_workdir("uce"):
            dataset = self.model.process_data(data, gene_names="index", name="shard")
            lengths = np.array([int(dataset[i][3]) for i in range(len(dataset))])  # helical's own sentences
            for length in np.unique(lengths):
                rows = np.flatnonzero(lengths == length)
                with self._autocast(torch):
                    out[rows] = np.asarray(self.model.get_embeddings(_cells(dataset, rows.tolist())))
        return out

    def _autocast(self, torch: Any) -> Any:
        """helical's UCE runs its forward pass without autocast; fp16/bf16 on a GPU get it here."""
        if not self.device.startswith("cuda") or self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[self.precision]
        stack = contextlib.ExitStack()
        stack.enter_context(precision_scope(self.device, self.precision))
        stack.enter_context(torch.autocast("cuda", dtype=dtype))
        return stack
