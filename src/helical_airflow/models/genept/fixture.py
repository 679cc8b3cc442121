"""A tiny random GenePT in helical's layout: genept_embeddings.json, a random vector for each fixture gene.

Keys are upper-case symbols, as helical looks them up (`symbol.upper()`); values `{"embeddings": [...]}` as in
the real file. Tiny vectors are 32 wide; shape="real" writes the real 1,536 (text-embedding-ada-002).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np

from ..fixture_io import FixtureContext
from .files import EMBEDDINGS

if TYPE_CHECKING:
    from ..profiles import ModelSpec

REAL = {"width": 1536}
TINY = {"width": 32}


def build(ctx: FixtureContext, spec: ModelSpec) -> dict[str, Any]:
    width = (REAL if ctx.shape == "real" else TINY)["width"]
    symbols = list(dict.fromkeys(s.upper() for s in ctx.symbols))
    rng = np.random.default_rng(ctx.stable_seed(f"genept/{spec.helical_model_name}"))
    vectors = np.round(rng.normal(0.0, 0.03, (len(symbols), width)), 6)
    table = {s: {"embeddings": [float(v) for v in row]} for s, row in zip(symbols, vectors, strict=True)}
    ctx.write(EMBEDDINGS, json.dumps(table, separators=(",", ":")).encode())
    return {"hidden_size": width, "layers": 0, "parameters": int(vectors.size)}
