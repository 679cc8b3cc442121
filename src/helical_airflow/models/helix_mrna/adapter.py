"""Helix-mRNA through helical: `HelixmRNA.process_data` then `get_embeddings` (per-token states of the last layer),
pooled at each sequence's last nucleotide.

What the adapter does about helical's habits (measured on the fixture, 10 records of the sample as RNA):
- Pooling: get_embeddings returns every token's state, the [SEP] the tokenizer appends included (masked by
  helical: attention_mask = 1 - special_tokens_mask, helical/models/helix_mrna/model.py:168). helical's own
  notebook (examples/notebooks/Helix-mRNA.ipynb: `embeddings[:, -2, :]`, "our final non-special token embedding
  at the second last position encapsulates everything that came before it") pools the last nucleotide; so does
  this adapter (`last_real_token`: the last token that is not special, wherever padding puts it). Distinct
  records: min pairwise max-abs difference 1.08.
- Batch mates: helical's naive (CPU) Mamba2 mixer zeroes the masked [SEP] only in batches of 2 or more
  (Mamba2Mixer.forward, modeling_helix_mrna.py:1157-1162: `attention_mask.shape[0] > 1`), and its chunked scan lets that
  later token reach the states of earlier chunks (every position from the second 64-token chunk on changed):
  a record's last-nucleotide state moved by up to 1.0e-3 (values up to 2.5) between a batch of 10 and alone,
  the same in float64 (not rounding), 0.0 with an all-ones mask. helical's batch size is therefore 1: each
  record is embedded exactly as alone.
- Padding: process_data pads on the left to the longest of the call (padding="longest", model.py:112; the
  tokenizer's padding_side "left", helix_mrna_tokenizer.py:56): a 120-nt record padded next to a 200-nt one vs
  alone, 0.022. SequenceRunner gives helical sequences of one length per call, so nothing is padded.
- Cache: HelixmRNAPretrainedConfig defaults to use_cache=True, and with it the forward builds cache_position =
  arange(conv_kernel) (modeling_helix_mrna.py:1601-1611), so the sdpa/eager causal mask is built for 4 positions
  and any other length fails (:1729: "The size of tensor a (201) must match the size of tensor b (4)"); the
  flash_attention_2 path skips that mask. An embedding needs no cache: use_cache is turned off.
- Layers: helical's forward never feeds a block's output to the next (the loop at modeling_helix_mrna.py:1643-1683
  passes `hidden_states`, the embeddings, to every block and keeps only the last block's output): the states are
  norm_f(last block(embeddings)), 0.0 max difference on the fixture. This is helical 3.1.4's model as it ships (and
  as upstream helical has it); the adapter does not rewrite it. With helical's default layout the last block is a
  Mamba2 block, so the states still depend on the preceding nucleotides.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import cache
from ..sequence import SequenceRunner, last_real_token, local_hub_folder
from . import files


class HelixmRNARunner(SequenceRunner):
    def load_model(self) -> Any:
        from helical.models.helix_mrna import HelixmRNA, HelixmRNAConfig

        # batch_size 1: a batch of 2+ switches helical's masking on, which reaches a record's states (docstring);
        # max_length counts the [SEP] the tokenizer appends
        config = HelixmRNAConfig(batch_size=1, device=self.device, max_length=self.context + 1)
        config.config["model_name"] = local_hub_folder(cache.models_dir(self.cache_dir) / files.folder())
        model = HelixmRNA(configurer=config)
        model.model.config.use_cache = False
        return model

    @property
    def embedding_dim(self) -> int:
        return int(self.model.pretrained_config.hidden_size)

    def _embed_helical(self, sequences: list[str]) -> np.ndarray:
        dataset = self.model.process_data(sequences)
        hidden = self.model.get_embeddings(dataset)  # (n, L, hidden): every token, [SEP] last
        return last_real_token(hidden, np.asarray(dataset["special_tokens_mask"]))
