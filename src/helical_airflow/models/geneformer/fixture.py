"""A tiny random Geneformer in helical's layout: token, median and mapping dictionaries plus a BertForMaskedLM."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..fixture_io import FixtureContext, json_bytes, save_pretrained_quietly, torch_bytes
from . import files

if TYPE_CHECKING:
    from ..profiles import ModelSpec

#: true architecture of each Geneformer model (from the published config.json files)
REAL = {
    "gf-6L-10M-i2048": {"layers": 6, "hidden": 256, "heads": 4, "intermediate": 512},
    "gf-12L-40M-i2048": {"layers": 12, "hidden": 512, "heads": 8, "intermediate": 1024},
    "gf-12L-40M-i2048-CZI-CellxGene": {"layers": 12, "hidden": 512, "heads": 8, "intermediate": 1024},
    "gf-12L-38M-i4096": {"layers": 12, "hidden": 512, "heads": 8, "intermediate": 1024},
    "gf-12L-38M-i4096-CLcancer": {"layers": 12, "hidden": 512, "heads": 8, "intermediate": 1024},
    "gf-20L-151M-i4096": {"layers": 20, "hidden": 896, "heads": 14, "intermediate": 1792},
    "gf-12L-104M-i4096": {"layers": 12, "hidden": 768, "heads": 12, "intermediate": 3072},
    "gf-12L-104M-i4096-CLcancer": {"layers": 12, "hidden": 768, "heads": 12, "intermediate": 3072},
    "gf-18L-316M-i4096": {"layers": 18, "hidden": 1152, "heads": 18, "intermediate": 4608},
}
TINY = {"layers": 2, "hidden": 32, "heads": 2, "intermediate": 64}


def build(ctx: FixtureContext, spec: ModelSpec) -> dict[str, Any]:
    import torch
    from transformers import BertConfig, BertForMaskedLM

    name = spec.helical_model_name
    paths = files.paths(name)
    version = files.VERSION[name]
    specials = ["<pad>", "<mask>"] + (["<cls>", "<eos>"] if version != "v1" else [])
    ids = ctx.ensembl_ids
    tokens = {tok: i for i, tok in enumerate(specials + ids)}
    rng = np.random.default_rng(ctx.stable_seed("medians"))
    medians = {e: float(round(m, 6)) for e, m in zip(ids, rng.lognormal(0.5, 1.0, len(ids)), strict=True)}
    # the real mapping dictionary maps both Ensembl ids and upper-case symbols to Ensembl ids
    mapping = {e: e for e in ids} | {s.upper(): e for e, s in ctx.table if s}
    ctx.write(paths["token"], json_bytes(tokens))
    ctx.write(paths["median"], json_bytes(medians))
    ctx.write(paths["mapping"], json_bytes(mapping))

    dims = REAL[name] if ctx.shape == "real" else TINY
    config = BertConfig(
        vocab_size=len(tokens),
        hidden_size=dims["hidden"],
        num_hidden_layers=dims["layers"],
        num_attention_heads=dims["heads"],
        intermediate_size=dims["intermediate"],
        max_position_embeddings=2048 if name.endswith("i2048") or "i2048-" in name else 4096,
        hidden_act="relu",
        pad_token_id=0,
        type_vocab_size=2,
        layer_norm_eps=1e-12,
        hidden_dropout_prob=0.02,
        attention_probs_dropout_prob=0.02,
    )
    torch.manual_seed(ctx.stable_seed(name))
    model = BertForMaskedLM(config).eval()
    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained_quietly(model, tmp)  # config.json + model.safetensors
        ctx.write(paths["config"], (Path(tmp) / "config.json").read_bytes())
        if paths["weights"].endswith(".safetensors"):
            ctx.write(paths["weights"], (Path(tmp) / "model.safetensors").read_bytes())
        else:  # v1 checkpoints are pickled state dicts, which transformers still loads
            ctx.write(paths["weights"], torch_bytes({k: v.contiguous() for k, v in model.state_dict().items()}))
    ctx.write(paths["training_args"], torch_bytes({"fixture": True, "note": "helical never reads this"}))
    return {
        "hidden_size": dims["hidden"],
        "layers": dims["layers"],
        "parameters": int(sum(p.numel() for p in model.parameters())),
    }
