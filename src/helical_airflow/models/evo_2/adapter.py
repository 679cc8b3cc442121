"""Evo 2 through helical: `Evo2.process_data` then `get_embeddings` (per-token states of the default layer),
mean-pooled over each sequence's own tokens. CUDA only (vortex)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...settings import export_default
from .. import cache
from ..sequence import SequenceRunner
from . import files


class Evo2Runner(SequenceRunner):
    def load_model(self) -> Any:
        export_default("HF_HUB_CACHE", str(cache.models_dir(self.cache_dir) / files.HUB_CACHE))
        from helical.models.evo_2 import Evo2, Evo2Config

        return Evo2(configurer=Evo2Config(model_name=self.spec.helical_model_name, batch_size=self.batch_size))

    @property
    def embedding_dim(self) -> int:
        return int(self.model.config["model_map"]["hidden_size"])

    def _embed_helical(self, sequences: list[str]) -> np.ndarray:
        out = self.model.get_embeddings(self.model.process_data(sequences))
        length = int(self.model.max_seq_len)  # the calls' common length (process_data sets it)
        states = np.concatenate(
            [np.asarray(e, dtype=np.float32).reshape(-1, length, e.shape[-1]) for e in out["embeddings"]]
        )
        return states.mean(axis=1)  # every sequence of the call fills the whole length: no padding to leave out
