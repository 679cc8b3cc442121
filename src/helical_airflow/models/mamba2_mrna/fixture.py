"""A random Mamba2-mRNA in helical's layout: the local copy of the hub repo (files.folder()) with transformers'
`Mamba2Model.save_pretrained` (config.json, model.safetensors) and helical's own `CharTokenizer.save_pretrained`
(tokenizer_config.json), which is what helical's from_pretrained calls read. Tiny (2 layers, hidden 32, 4 heads of
16, state 16, chunk 64: about 0.1 MB), with the token ids of helical's tokenizer ([SEP] 1, [BOS] 2, [PAD] 4; 12
ids)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import files

if TYPE_CHECKING:
    from ..fixture_io import FixtureContext
    from ..profiles import ModelSpec

CHILD = """
import json, sys, torch
seed, out = json.loads(sys.argv[1])
from transformers import Mamba2Config, Mamba2Model
from transformers.utils import logging
from helical.models.mamba2_mrna.mamba2_mrna_tokenizer import CharTokenizer
logging.disable_progress_bar()
torch.manual_seed(seed)
tokenizer = CharTokenizer(model_max_length=8192)
config = Mamba2Config(vocab_size=len(set(tokenizer.get_vocab().values())), hidden_size=32, expand=2, head_dim=16,
                      num_heads=4, state_size=16, n_groups=1, num_hidden_layers=2, conv_kernel=4, chunk_size=64,
                      pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                      eos_token_id=tokenizer.eos_token_id)
model = Mamba2Model(config)
model.save_pretrained(out)
tokenizer.save_pretrained(out)
print(json.dumps({"hidden_size": config.hidden_size, "layers": config.num_hidden_layers,
                  "parameters": int(sum(p.numel() for p in model.parameters()))}))
"""


def build(ctx: FixtureContext, spec: ModelSpec) -> dict[str, Any]:
    return files.COPY.build_fixture(ctx, spec, CHILD)
