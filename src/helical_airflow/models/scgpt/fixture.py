"""A tiny random scGPT in helical's layout: vocab.json, args.json and helical's own TransformerModel weights."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..fixture_io import FixtureContext, json_bytes, run_child
from ..vocab import SPECIAL_TOKENS
from .files import MODEL_DIR

if TYPE_CHECKING:
    from ..profiles import ModelSpec

REAL = {"embsize": 512, "nheads": 8, "d_hid": 512, "nlayers": 12, "n_layers_cls": 3}
TINY = {"embsize": 32, "nheads": 2, "d_hid": 64, "nlayers": 2, "n_layers_cls": 1}

# helical's own scGPT TransformerModel, randomly initialised, with the constructor arguments helical's
# scgpt_utils.load_model uses (in a child process: see fixture_io.run_child)
_CHILD = """
import json, sys, torch
from helical.models.scgpt.model_dir import TransformerModel
ntoken, dims, seed, out = json.loads(sys.argv[1])
torch.manual_seed(seed)
model = TransformerModel(
    ntoken=ntoken, d_model=dims["embsize"], nhead=dims["nheads"], d_hid=dims["d_hid"],
    nlayers=dims["nlayers"], nlayers_cls=dims["n_layers_cls"], n_cls=1, vocab={"<pad>": 0}, dropout=0.2,
    pad_token="<pad>", pad_value=-2, do_mvc=True, do_dab=False, use_batch_labels=False,
    domain_spec_batchnorm=False, explicit_zero_prob=False, pre_norm=False,
).eval()
# Default init leaves the <cls> output nearly the same for every cell (mean pairwise cosine 0.9994 on the
# sample, which the quality gate rightly calls collapsed): 5x the attention output projections mixes more of
# the cell's genes into it (0.994 on the sample; still random weights, still no biology).
with torch.no_grad():
    for name, param in model.named_parameters():
        if name.endswith("self_attn.out_proj.weight"):
            param.mul_(5.0)
torch.save({k: v.contiguous() for k, v in model.state_dict().items()}, out)
print(sum(p.numel() for p in model.parameters()))
"""


def build(ctx: FixtureContext, spec: ModelSpec) -> dict[str, Any]:
    vocab = {
        tok: i
        for i, tok in enumerate(["<pad>", "<cls>", "<eoc>", *(s for s in ctx.symbols if s not in SPECIAL_TOKENS)])
    }
    dims = REAL if ctx.shape == "real" else TINY
    ctx.write(f"{MODEL_DIR}/vocab.json", json_bytes(vocab))
    ctx.write(f"{MODEL_DIR}/args.json", json_bytes({**dims, "fixture": True}))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "best_model.pt"
        parameters = int(
            run_child(_CHILD, len(vocab), dims, ctx.stable_seed("scgpt"), str(out)).strip().splitlines()[-1]
        )
        ctx.write(f"{MODEL_DIR}/best_model.pt", out.read_bytes())
    return {"hidden_size": dims["embsize"], "layers": dims["nlayers"], "parameters": parameters}
