"""A tiny random Tahoe-x1 in the Hugging Face hub cache layout helical's TXModel.from_hf reads offline.

`<models dir>/tahoe/hub/models--tahoebio--Tahoe-x1/refs/main` names the snapshot; its `<size>-model/` folder
holds vocab.json (Ensembl ids -> token ids, specials first), model_config.yml and collator_config.yml (the
keys of the published configs, from tahoe-x1's training configs), and model.safetensors: helical's own TXModel
built from those configs with seeded random weights (in a child process: see fixture_io.run_child).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ..fixture_io import FixtureContext, json_bytes, run_child
from .files import REVISION, repo_dir, snapshot

if TYPE_CHECKING:
    from ..profiles import ModelSpec

SPECIALS = ("<pad>", "<cls>", "<mask>", "<eos>")
#: the published architectures (tahoe-x1 configs/gcloud/tahoe_x1-70m-merged.yaml, -1_3b-merged.yaml,
#: configs/mcli/tahoe_x1-3b-v2.yaml), used for shape="real"
REAL = {
    "70m": {"d_model": 512, "n_layers": 12, "n_heads": 8, "expansion_ratio": 4, "activation": "relu"},
    "1b": {"d_model": 2048, "n_layers": 24, "n_heads": 16, "expansion_ratio": 4, "activation": "relu"},
    "3b": {"d_model": 2560, "n_layers": 32, "n_heads": 20, "expansion_ratio": 4, "activation": "gelu"},
}
TINY = {"d_model": 32, "n_layers": 2, "n_heads": 2, "expansion_ratio": 2, "activation": "relu"}


def model_config(dims: dict[str, Any], vocab_size: int) -> dict[str, Any]:
    act = dims["activation"]
    return {
        "name": "tahoe_x1", "vocab_size": vocab_size, "d_model": dims["d_model"], "n_layers": dims["n_layers"],
        "n_heads": dims["n_heads"], "expansion_ratio": dims["expansion_ratio"], "init_device": "cpu",
        "standard_scale_outputs": False, "transformer_activation": act, "norm_scheme": "pre", "use_glu": False,
        "cell_emb_style": "cls",
        "attn_config": {"attn_impl": "flash", "use_attn_mask": False, "attn_type": "grouped_query_attention",
                        "kv_nheads": dims["n_heads"], "attn_pdrop": 0.0},
        "norm_config": {"norm_type": "layernorm", "eps": 1.0e-5},
        "expression_encoder": {"input_emb_style": "continuous", "dropout": 0.1, "max_value": 512,
                               "activation": act, "use_norm": True},
        "gene_encoder": {"use_norm": True},
        "mvc": {"arch_style": "inner product", "query_activation": "sigmoid", "scaled_dot_product": True},
        "expression_decoder": {"n_outputs": 1, "n_layers": 1, "activation": "leaky_relu"},
        "precision": "amp_bf16",
        "fixture": True,
    }  # fmt: skip


def collator_config(pad_token_id: int) -> dict[str, Any]:
    return {
        "do_padding": True, "pad_token_id": pad_token_id, "pad_value": -2, "do_mlm": True, "do_binning": True,
        "mlm_probability": 0.5, "mask_value": -1, "max_length": 1024, "sampling": True, "data_style": "both",
        "num_bins": 51, "right_binning": False, "use_junk_tokens": False, "keep_first_n_tokens": 1,
    }  # fmt: skip


# helical's own TXModel from the configs, randomly initialised (helical's param_init_fn), saved as from_hf loads it
_CHILD = """
import json, sys
from helical_airflow.models.tahoe.flash import prepare_flash_attn_import
prepare_flash_attn_import()
import torch
from omegaconf import OmegaConf as om
from safetensors.torch import save_file
from helical.models.tahoe.tahoe_x1.model import TXModel
for model_cfg, collator_cfg, seed, out in json.loads(sys.argv[1])[0]:
    torch.manual_seed(seed)
    model_cfg = om.create(model_cfg)
    model_cfg["do_mlm"] = False
    model = TXModel(model_config=model_cfg, collator_config=om.create(collator_cfg)).eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out)
    print(sum(p.numel() for p in model.parameters()))
"""

#: weights written by one child for every size of a tiny build (one helical import instead of three):
#: (what the weights depend on, size) -> (safetensors bytes, parameters)
_BUILT: dict[tuple[str, str], tuple[bytes, int]] = {}


def _weights(ctx: FixtureContext, size: str, vocab: dict[str, int]) -> tuple[bytes, int]:
    key = json.dumps([ctx.seed, ctx.shape, vocab])
    if (key, size) not in _BUILT:
        _BUILT.clear()
        sizes = list(REAL) if ctx.shape == "tiny" else [size]
        with tempfile.TemporaryDirectory() as tmp:
            jobs = [
                [model_config(REAL[s] if ctx.shape == "real" else TINY, len(vocab)), collator_config(vocab["<pad>"]),
                 ctx.stable_seed(f"tahoe-{s}"), str(Path(tmp) / f"{s}.safetensors")]
                for s in sizes
            ]  # fmt: skip
            counts = run_child(_CHILD, jobs).split()[-len(sizes) :]
            for job, s, count in zip(jobs, sizes, counts, strict=True):
                _BUILT[(key, s)] = (Path(str(job[3])).read_bytes(), int(count))
    return _BUILT.pop((key, size))


def build(ctx: FixtureContext, spec: ModelSpec) -> dict[str, Any]:
    size = spec.helical_model_name
    dims = REAL[size] if ctx.shape == "real" else TINY
    vocab = {token: i for i, token in enumerate([*SPECIALS, *dict.fromkeys(ctx.ensembl_ids)])}
    mcfg, ccfg = model_config(dims, len(vocab)), collator_config(vocab["<pad>"])
    base = snapshot(size)
    ctx.write(f"{repo_dir()}/refs/main", REVISION.encode())
    ctx.write(f"{base}/vocab.json", json_bytes(vocab))
    ctx.write(f"{base}/model_config.yml", yaml.safe_dump(mcfg, sort_keys=False).encode())
    ctx.write(f"{base}/collator_config.yml", yaml.safe_dump(ccfg, sort_keys=False).encode())
    weights, parameters = _weights(ctx, size, vocab)
    ctx.write(f"{base}/model.safetensors", weights)
    return {"hidden_size": dims["d_model"], "layers": dims["n_layers"], "parameters": parameters}
