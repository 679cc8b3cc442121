"""A random HyenaDNA checkpoint in helical's layout: `hyena_dna/<model>.weights.ckpt` = {"state_dict": ...} with the
"model." prefix helical's load_weights strips. The architecture is helical's own (HyenaDNAConfig fixes d_model,
d_inner and 2 layers per model name, so "tiny" and "real" are the same shape); weights are stored in fp16 (helical
loads them into its fp32 model) to keep the fixture small."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..fixture_io import FixtureContext, run_child
from . import files

if TYPE_CHECKING:
    from ..profiles import ModelSpec

CHILD = """
import json, sys, torch
name, seed, out = json.loads(sys.argv[1])
from helical.models.hyena_dna.hyena_dna_config import HyenaDNAConfig
from helical.models.hyena_dna.standalone_hyenadna import HyenaDNAModel
torch.manual_seed(seed)
config = HyenaDNAConfig(model_name=name).config
model = HyenaDNAModel(**config, use_head=False, n_classes=2)
state = {"model." + k: v.detach().to(torch.float16).contiguous()
         for k, v in model.state_dict().items() if "backbone" in k}
torch.save({"state_dict": state}, out)
print(json.dumps({"d_model": config["d_model"], "layers": config["n_layer"],
                  "parameters": int(sum(p.numel() for p in model.parameters()))}))
"""


def build(ctx: FixtureContext, spec: ModelSpec) -> dict[str, Any]:
    name = spec.helical_model_name
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ckpt"
        info = json.loads(run_child(CHILD, name, ctx.stable_seed(name), str(out)).strip().splitlines()[-1])
        ctx.write(files.files(name, {})[0], out.read_bytes())
    return {"hidden_size": info["d_model"], "layers": info["layers"], "parameters": info["parameters"]}
