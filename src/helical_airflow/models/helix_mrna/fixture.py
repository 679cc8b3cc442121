"""A random Helix-mRNA in helical's layout: the local copy of the hub repo (files.folder()) with helical's own
`HelixmRNAPretrainedModel.save_pretrained` (config.json, model.safetensors) and `CharTokenizer.save_pretrained`
(tokenizer_config.json), which is what helical's from_pretrained calls read. Tiny, one block of each kind helical's
hybrid has, ending as helical's default layout does on a Mamba2 block (layers_block_type "M*+M": Mamba2, attention,
MLP, Mamba2; which block comes last matters, adapter.py says why; hidden 32, 4 Mamba heads of 16, state 16, 4
attention heads over 2 key/value heads, chunk 64: about 0.15 MB), the token ids of helical's tokenizer ([BOS] 0;
[PAD] and [SEP] are both 1 there; 13 ids) and helical's other defaults, use_cache=True included (the adapter turns
it off; adapter.py says why)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import files

if TYPE_CHECKING:
    from ..fixture_io import FixtureContext
    from ..profiles import ModelSpec

CHILD = """
import json, sys, torch
seed, out = json.loads(sys.argv[1])
from transformers.utils import logging
from helical.models.helix_mrna.helix_mrna_pretrained_config import HelixmRNAPretrainedConfig
from helical.models.helix_mrna.modeling_helix_mrna import HelixmRNAPretrainedModel
from helical.models.helix_mrna.helix_mrna_tokenizer import CharTokenizer
logging.disable_progress_bar()
torch.manual_seed(seed)
tokenizer = CharTokenizer(model_max_length=12288)
config = HelixmRNAPretrainedConfig(num_heads=4, head_dim=16, vocab_size=max(tokenizer.get_vocab().values()) + 1,
                                   hidden_size=32, state_size=16, num_hidden_layers=4, num_attention_heads=4,
                                   num_key_value_heads=2, n_groups=1, chunk_size=64, layers_block_type="M*+M",
                                   pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                                   eos_token_id=tokenizer.eos_token_id)
model = HelixmRNAPretrainedModel(config)
model.save_pretrained(out)
tokenizer.save_pretrained(out)
print(json.dumps({"hidden_size": config.hidden_size, "layers": config.num_hidden_layers,
                  "parameters": int(sum(p.numel() for p in model.parameters()))}))
"""


def build(ctx: FixtureContext, spec: ModelSpec) -> dict[str, Any]:
    return files.COPY.build_fixture(ctx, spec, CHILD)
