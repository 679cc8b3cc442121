"""HyenaDNA through helical: `HyenaDNA.process_data` then `get_embeddings` (per-token states), mean-pooled."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..sequence import SequenceRunner, mean_over_tokens


class HyenaDNARunner(SequenceRunner):
    def load_model(self) -> Any:
        from helical.models.hyena_dna import HyenaDNA, HyenaDNAConfig

        config = HyenaDNAConfig(model_name=self.spec.helical_model_name, batch_size=self.batch_size, device=self.device)
        return HyenaDNA(configurer=config)

    @property
    def embedding_dim(self) -> int:
        return int(self.model.config["d_model"])

    def _embed_helical(self, sequences: list[str]) -> np.ndarray:
        dataset = self.model.process_data(sequences)
        hidden = self.model.get_embeddings(dataset)  # (n, L, d_model)
        ids = np.asarray(dataset["input_ids"])
        return mean_over_tokens(hidden, ids, self.model.tokenizer.pad_token_id)
