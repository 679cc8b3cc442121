"""Mamba2-mRNA through helical: `Mamba2mRNA.process_data`, then helical's loaded model on helical's own batches
(`_collate_fn`: attention_mask = 1 - special_tokens_mask, as get_embeddings builds it), pooled at each sequence's
last nucleotide.

Why not helical's `get_embeddings`: it pools the state at the last position, the [SEP] that the tokenizer appends
(helical/models/mamba2_mrna/model.py:156-173: the first [PAD] - 1, modulo the length: the last index), while its
own mask zeroes that token (model.py:193). transformers' Mamba2 multiplies a masked token's mixer input by 0
(transformers/models/mamba2/modeling_mamba2.py:93-101, 476): in_proj(0) = 0 (no bias), so the gate z is 0 and
the gated norm's silu(z) = 0 (:116, :600) zeroes the mixer's output there; the [SEP] state is its embedding
passed through every residual and the final norm, the same for every sequence. Measured on the fixture (10
records of the sample as RNA), helical's get_embeddings: all 10 the same vector, max pairwise difference 0.0, with
batches of 4 and of 1 (transformers 5 masks at any batch size), and equal to norm_f(embedding([SEP])) (0.0).
helical's own comment (model.py:175, "Take second last element from the output as last element is a special
token") says what was meant: the last nucleotide, the one state of a causal model that has read the whole
sequence. This pooling: min pairwise max-abs difference 1.92 between the 10 records; a batch of 10 vs each
alone 0.0; left-padded to 300 tokens vs unpadded 3.6e-7 (masked padding is neutral in transformers' Mamba2).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import cache
from ..sequence import SequenceRunner, last_real_token, local_hub_folder
from . import files


class Mamba2mRNARunner(SequenceRunner):
    def load_model(self) -> Any:
        from helical.models.mamba2_mrna import Mamba2mRNA, Mamba2mRNAConfig

        # max_length counts the [SEP] the tokenizer appends
        config = Mamba2mRNAConfig(batch_size=self.batch_size, device=self.device, max_length=self.context + 1)
        config.config["model_name"] = local_hub_folder(cache.models_dir(self.cache_dir) / files.folder())
        return Mamba2mRNA(configurer=config)

    @property
    def embedding_dim(self) -> int:
        return int(self.model.pretrained_config.hidden_size)

    def _embed_helical(self, sequences: list[str]) -> np.ndarray:
        import torch
        from torch.utils.data import DataLoader

        # process_data pads every sequence on the left to config["input_size"] (padding="max_length", 8,192 tokens
        # by default): the sequences of a call have one length, so the call's input size is that length + [SEP]
        self.model.config["input_size"] = len(sequences[0]) + 1
        dataset = self.model.process_data(sequences)
        loader = DataLoader(dataset, collate_fn=self.model._collate_fn, batch_size=self.batch_size, shuffle=False)
        out: list[np.ndarray] = []
        with torch.no_grad():
            for batch in loader:
                special = batch["special_tokens_mask"].to(self.device)
                hidden = self.model.model(
                    batch["input_ids"].to(self.device), special_tokens_mask=special,
                    attention_mask=batch["attention_mask"].to(self.device),
                )[0]  # fmt: skip
                out.append(last_real_token(hidden.float().cpu().numpy(), special.cpu().numpy()))
        return np.concatenate(out)
