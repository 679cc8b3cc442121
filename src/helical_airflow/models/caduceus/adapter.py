"""Caduceus through helical: `Caduceus.process_data` then `get_embeddings` (pooled by helical, "mean"). CUDA only."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..sequence import SequenceRunner


class CaduceusRunner(SequenceRunner):
    def load_model(self) -> Any:
        from helical.models.caduceus import Caduceus, CaduceusConfig

        return Caduceus(configurer=CaduceusConfig(model_name=self.spec.helical_model_name, batch_size=self.batch_size))

    @property
    def embedding_dim(self) -> int:
        return int(self.model.config["embedding_size"])

    def _embed_helical(self, sequences: list[str]) -> np.ndarray:
        return np.asarray(self.model.get_embeddings(self.model.process_data(sequences)), dtype=np.float32)
