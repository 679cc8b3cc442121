"""Tahoe-x1 through helical: `Tahoe.process_data` then `get_embeddings`, one shard at a time.

What the adapter does about helical's habits (docs/models/tahoe.md):
- Hub files: TXModel.from_hf calls `hf_hub_download(repo_id, filename)` with no cache_dir, i.e. into the Hugging
  Face hub cache. Before helical loads, the hub cache is pointed at `<models dir>/tahoe/hub` and the hub is put
  offline (HF_HUB_OFFLINE=1, and huggingface_hub's constants, which it reads once at import): no request leaves.
- Attention: attn_impl="flash" needs flash-attn's CUDA kernels; without them (any CPU) attn_impl="torch".
  flash_attn must still import (flash.py says why and how).
- Padding: from_hf forces `use_attn_mask=False`, so with attn_impl="torch" no mask reaches the attention and
  every cell attends to the padding of its batch (grouped_query_attention.py get_implementation_specific_args:
  key_padding_mask=attention_mask, which TXBlock never passes). A cell's embedding would change with its
  longest batch mate: with attn_impl="torch" the batch size is 1 (no padding at all; on a CPU a longer padded
  batch costs as much as the cells it pads). flash unpads each sequence (cu_seqlens), so on CUDA batches stay.
- Sampling: a cell with more than max_length (2048) expressed genes is cut to a random sample drawn from the
  global torch RNG, in dataset order: the collate function runs helical's collator on each cell under its own
  seed (the run's seed and the cell's counts), then pads the cells to the batch's longest, as helical's does.
- Precision: get_embeddings autocasts to the checkpoint's `precision` (amp_bf16) on whatever device it runs,
  a CPU too; it is set to the run's precision at each call (fp32 on a CPU unless bf16 was asked for by name).
- DataLoader: num_workers=0 (helical's default of 8 workers with prefetch 48 forks the shard process 8 times).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from ...settings import export, exported
from .. import cache
from . import files
from .flash import has_cuda_kernels, prepare_flash_attn_import

if TYPE_CHECKING:
    import anndata

prepare_flash_attn_import()  # raises ImportError (-> E222) when flash_attn is not installed

from ..runner import HelicalRunner  # noqa: E402

log = logging.getLogger(__name__)

#: the run's precision -> the name helical's get_embeddings looks up (Tahoe.get_embeddings dtype_from_string)
PRECISION = {"fp32": "fp32", "fp16": "amp_fp16", "bf16": "amp_bf16"}


@contextlib.contextmanager
def offline_hub(hub_cache: str) -> Iterator[None]:
    """hf_hub_download reads its cache folder and offline switch from huggingface_hub.constants, set at its import
    (long before this: helical imports it); both are set there and in the environment. Offline stays on."""
    import huggingface_hub.constants as hub

    export("HF_HUB_OFFLINE", "1")
    hub.HF_HUB_OFFLINE = True
    previous = hub.HF_HUB_CACHE
    hub.HF_HUB_CACHE = hub_cache
    try:
        with exported("HF_HUB_CACHE", hub_cache):
            yield
    finally:
        hub.HF_HUB_CACHE = previous


def cell_seed(seed: int, example: dict[str, Any]) -> int:
    """A seed from the run's seed and the cell's own tokens and counts: the same cell, the same sample."""
    digest = hashlib.sha256(str(seed).encode())
    digest.update(example["genes"].numpy().tobytes())
    digest.update(example["expressions"].numpy().tobytes())
    return int(digest.hexdigest()[:15], 16)


class PerCellCollator:
    """helical's DataCollator, called on each cell alone under the cell's own seed, then padded as it pads."""

    def __init__(self, collator: Any, seed: int) -> None:
        self.collator, self.seed = collator, seed

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        outs = []
        for example in examples:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cell_seed(self.seed, example))
                outs.append(self.collator([example]))
        if len(outs) == 1:
            return outs[0]
        length = max(out["gene"].shape[1] for out in outs)
        fill = {"gene": self.collator.pad_token_id, "gen_mask": False}
        batch = {}
        for key in outs[0]:
            parts = []
            for out in outs:
                value = out[key]
                if value.dim() == 2 and value.shape[1] < length:
                    pad = torch.full((1, length - value.shape[1]), fill.get(key, self.collator.pad_value),
                                     dtype=value.dtype)  # fmt: skip
                    value = torch.cat([value, pad], dim=1)
                parts.append(value)
            batch[key] = torch.cat(parts, dim=0)
        return batch


class TahoeRunner(HelicalRunner):
    def load_model(self) -> Any:
        from helical.models.tahoe import Tahoe, TahoeConfig

        self.attn_impl = "flash" if self.device.startswith("cuda") and has_cuda_kernels() else "torch"
        config = TahoeConfig(
            model_size=self.spec.helical_model_name, batch_size=self.batch_size if self.attn_impl == "flash" else 1,
            device=self.device, attn_impl=self.attn_impl, num_workers=0,
        )  # fmt: skip
        with offline_hub(str(cache.models_dir(self.cache_dir) / files.HUB_CACHE)):
            model = Tahoe(configurer=config)
        log.info("tahoe %s: attn_impl=%s, batch size %d", self.spec.helical_model_name, self.attn_impl,
                 config.config["batch_size"])  # fmt: skip
        return model

    @property
    def embedding_dim(self) -> int:
        return int(self.model.model.d_model)

    def _embed_helical(self, data: anndata.AnnData) -> np.ndarray:
        # set at each call, not at load: the agreement check (agreement.py) re-embeds a sample in fp32
        self.model.model_cfg["precision"] = PRECISION[self.precision]
        loader = self.model.process_data(data, gene_names="index")
        loader.collate_fn = PerCellCollator(loader.collate_fn, self.seed)
        return np.asarray(self.model.get_embeddings(loader))
