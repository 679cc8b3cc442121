"""A tiny random Nicheformer in helical's layout: config.json + model.safetensors (helical's own
NicheformerForMaskedLM, randomly initialised), the tokenizer's vocab.json and the reference model.h5ad.

helical's tokenizer aligns the input to the reference AnnData with `ad.concat([reference, input], join="outer")`
and numbers each gene by its column in the result (+ 30 auxiliary tokens). An outer join sorts the gene ids,
so the reference is written sorted and vocab.json numbers the genes in that same order: the ids vocab.json
gives and the ids the tokenizer uses agree whatever genes and gene order the input has.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..fixture_io import FixtureContext, json_bytes, run_child
from .files import MODEL_DIR

if TYPE_CHECKING:
    from ..profiles import ModelSpec

#: the published theislab/Nicheformer architecture (its config.json: 12 layers, 512 wide, 16 heads, 20,310 genes)
REAL = {"dim_model": 512, "nheads": 16, "dim_feedforward": 1024, "nlayers": 12}
TINY = {"dim_model": 32, "nheads": 2, "dim_feedforward": 64, "nlayers": 2}
#: fixed by helical's tokenizer (max_length=1500 pads every cell to it) and the learnable positional embedding
CONTEXT_LENGTH = 1500
AUX_TOKENS = 30  # token ids below 30 are special, context and reserved tokens

# helical's own NicheformerForMaskedLM and the tokenizer's context tokens (in a child: fixture_io.run_child)
_CHILD = """
import json, sys, torch
from helical.models.nicheformer import NicheformerForMaskedLM
from helical.models.nicheformer.configuration_nicheformer import NicheformerConfig
from helical.models.nicheformer.tokenization_nicheformer import NicheformerTokenizer as T
n_tokens, context_length, dims, seed, out = json.loads(sys.argv[1])
torch.manual_seed(seed)
config = NicheformerConfig(n_tokens=n_tokens, context_length=context_length, dropout=0.0, learnable_pe=True, **dims)
model = NicheformerForMaskedLM(config).eval()
model.save_pretrained(out)
# the bracketed tokens NicheformerTokenizer writes next to the genes when it builds a vocabulary itself
vocab = {"[PAD]": 1, "[MASK]": 0, "[CLS]": 2}
vocab.update({f"[MODALITY_{k}]": v for k, v in T.modality_dict.items()})
vocab.update({f"[SPECIES_{k}]": v for k, v in T.species_dict.items() if k not in ("Homo sapiens", "Mus musculus")})
vocab.update({"[TECH_" + k.lower().replace(" ", "_").replace("'", "_") + "]": v
              for k, v in T.technology_dict.items() if k not in ("MERFISH", "10x transcription profiling")})
print(json.dumps({"parameters": sum(p.numel() for p in model.parameters()), "vocab": vocab}))
"""


def reference_h5ad(genes: list[str]) -> bytes:
    """model.h5ad: one empty reference cell over the model's genes (what the tokenizer concatenates, then drops)."""
    import anndata as ad

    reference = ad.AnnData(
        X=sp.csr_matrix((1, len(genes)), dtype=np.float32),
        obs=pd.DataFrame(index=pd.Index(["reference"])),
        var=pd.DataFrame(index=pd.Index(genes)),
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.h5ad"
        reference.write_h5ad(path)
        return path.read_bytes()


def build(ctx: FixtureContext, spec: ModelSpec) -> dict[str, Any]:
    genes = sorted(ctx.ensembl_ids)
    dims = REAL if ctx.shape == "real" else TINY
    n_tokens = len(genes) + AUX_TOKENS
    with tempfile.TemporaryDirectory() as tmp:
        info = json.loads(run_child(_CHILD, n_tokens, CONTEXT_LENGTH, dims, ctx.stable_seed("nicheformer"), tmp)
                          .strip().splitlines()[-1])  # fmt: skip
        ctx.write(f"{MODEL_DIR}/config.json", (Path(tmp) / "config.json").read_bytes())
        ctx.write(f"{MODEL_DIR}/model.safetensors", (Path(tmp) / "model.safetensors").read_bytes())
    vocab = {**info["vocab"], **{gene: i + AUX_TOKENS for i, gene in enumerate(genes)}}
    ctx.write(f"{MODEL_DIR}/vocab.json", json_bytes(vocab))
    ctx.write(f"{MODEL_DIR}/model.h5ad", reference_h5ad(genes))
    return {"hidden_size": dims["dim_model"], "layers": dims["nlayers"], "parameters": int(info["parameters"])}
