"""scGPT through helical: `scGPT.process_data` then `get_embeddings`, one shard at a time.

Two choices make a cell's embedding independent of the other cells in its shard:
- emb_mode="cls" (the CLS token, which is what the original scGPT `embed_data` returns). helical's
  default "cell" mode averages every position of the padded batch, padding included, so a cell's
  embedding would change with the longest cell that happens to share its batch.
- helical 3.1.4 already bins each cell's values with its own fixed-seed generator and samples genes
  of cells longer than 1,200 with a fixed per-cell generator, so no randomness crosses cells.
The checkpoint's architecture comes from `args.json` beside `best_model.pt` (written by the fixture
builder, and shipped with the original scGPT checkpoints) when present, else helical's defaults.
helical loads the state dict non-strictly and silently skips tensors whose shape does not match;
we check that every tensor was taken, so a mismatched checkpoint fails instead of running random
weights.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import ConfigError
from .. import cache
from ..runner import HelicalRunner, precision_scope
from .fast import scgpt_embeddings

if TYPE_CHECKING:
    import anndata

    from ..profiles import ModelSpec

log = logging.getLogger(__name__)

#: scGPTConfig arguments that describe the architecture, as named in the checkpoint's args.json
ARCH_KEYS = ("embsize", "nheads", "d_hid", "nlayers", "n_layers_cls")


def architecture(model_dir: Path) -> dict[str, int]:
    args_file = model_dir / "args.json"
    if not args_file.is_file():
        return {}
    args = json.loads(args_file.read_text())
    return {key: int(args[key]) for key in ARCH_KEYS if key in args}


def check_fully_loaded(model: Any, checkpoint: Path, spec: ModelSpec) -> None:
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    loaded = model.state_dict()
    skipped = [
        name
        for name, tensor in ((k.replace("Wqkv.", "in_proj_"), v) for k, v in state.items())
        if name not in loaded or tuple(loaded[name].shape) != tuple(tensor.shape)
    ]
    if skipped:
        raise ConfigError(
            "E223",
            f"{len(skipped)} tensors of {checkpoint} do not fit the scGPT architecture "
            f"(e.g. {skipped[0]}); helical would run with random weights in their place",
            "put the checkpoint's args.json (embsize, nheads, d_hid, nlayers, n_layers_cls) beside best_model.pt",
        )


class ScGPTRunner(HelicalRunner):
    def load_model(self) -> Any:
        from helical.models.scgpt import scGPT, scGPTConfig

        model_dir = cache.models_dir(self.cache_dir) / "scgpt" / "scGPT_CP"
        config = scGPTConfig(
            batch_size=self.batch_size,
            emb_mode="cls",
            device=self.device,
            binning_seed=self.seed,
            **architecture(model_dir),
        )
        model = scGPT(config)
        check_fully_loaded(model.model, model_dir / "best_model.pt", self.spec)
        return model

    @property
    def embedding_dim(self) -> int:
        return int(self.model.config["embsize"])

    def _embed_helical(self, data: anndata.AnnData) -> np.ndarray:
        dataset = self.model.process_data(data, gene_names="index")
        if self.engine == "fast":  # same tokens and weights, faster forward pass (docs/fast_path.md)
            return scgpt_embeddings(self.model, dataset, precision=self.precision)
        with precision_scope(self.device, self.precision):
            return np.asarray(self.model.get_embeddings(dataset))
