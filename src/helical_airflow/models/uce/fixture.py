"""A tiny random UCE in helical's layout: token table, checkpoint, chromosome table, offsets, protein embeddings.

What helical 3.1.4 reads (helical/models/uce/model.py, uce_utils.py, gene_embeddings.py):
- `uce/all_tokens.torch`: one row per token (every species' genes at its offset, then one row per
  species+chromosome at CHROM_TOKEN_OFFSET). A table of 143,574 rows (the real one) gets 1,895 random chromosome
  rows appended and the checkpoint's own `pe_embedding` is used; any other size replaces `pe_embedding`.
- `uce/<model>.torch`: a state dict of helical's TransformerModel, loaded strictly into a model whose
  `pe_embedding` is a 145,469 x 5,120 table and whose width is hard-coded (d_model 1280, 20 heads, uce_utils.py
  load_model), so every tensor must have its full shape. The big matrices are saved as views of a short random
  vector (Hankel matrices: W[i, j] = s[i + j]; torch.save keeps the vector, torch.load rebuilds the view), and
  the unused `pe_embedding` of a tiny model as a broadcast zero: the checkpoint stays ~10 MB (most of it the
  sinusoidal position table, stored as is) although the model holds 18 M parameters once loaded.
- `uce/species_chrom.csv` (species, chromosome, start, gene_symbol) and `uce/species_offsets.json`.
- `uce/protein_embeddings/<species file>.pt`: gene symbol -> embedding (helical uses the keys only), for all
  eight species, each listing the fixture's genes, so `--option species=...` runs offline too.
- `uce/<model>.args.json`: the UCEConfig settings of the tiny model (token_dim, d_hid, output_dim, n_layers,
  sample_size, pad_length, CHROM_TOKEN_OFFSET) that the adapter passes on; helical never reads it.
"""

from __future__ import annotations

import csv
import io
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..fixture_io import FixtureContext, json_bytes, run_child, torch_bytes
from . import files

if TYPE_CHECKING:
    from ..profiles import ModelSpec

#: helical's defaults (UCEConfig, uce_utils.load_model): the published architecture
REAL = {
    "4layer_model": {"token_dim": 5120, "d_hid": 5120, "output_dim": 1280, "n_layers": 4, "sample_size": 1024,
                     "pad_length": 1536},
    "33l_8ep_1024t_1280": {"token_dim": 5120, "d_hid": 5120, "output_dim": 1280, "n_layers": 33,
                           "sample_size": 1024, "pad_length": 1536},
}  # fmt: skip
#: d_model (1280) and the heads (20) are fixed by helical's loader; everything else is small. 16 genes sampled
#: per cell (1,024 in the real model) keeps a CPU pass over the 700-cell sample to seconds.
TINY = {"token_dim": 16, "d_hid": 16, "output_dim": 16, "n_layers": 2, "sample_size": 16, "pad_length": 64}
REAL_TOKENS = 143_574  # rows of the real all_tokens.torch (helical appends 1,895 chromosome rows to exactly this)
REAL_CHROM_ROWS = 1_895
CHROMOSOMES = ("1", "2", "3", "4", "X")  # per species in the fixture

# helical's own TransformerModel (loaded from its file: importing the helical package would fix its cache prefix
# and take seconds), built on the meta device for the names and shapes of its state dict, as uce_utils.load_model
# builds it; then every tensor is written small (see the module docstring). argv: dims, seed, shape, out.
_CHILD = r"""
import importlib.util, json, math, sys, torch
dims, seed, shape, out = json.loads(sys.argv[1])
path = importlib.util.find_spec("helical").submodule_search_locations[0] + "/models/uce/uce_model.py"
spec = importlib.util.spec_from_file_location("_helical_uce_model", path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
with torch.device("meta"):
    model = module.TransformerModel(token_dim=dims["token_dim"], d_model=1280, nhead=20, d_hid=dims["d_hid"],
                                    nlayers=dims["n_layers"], dropout=0.05, output_dim=dims["output_dim"])
    model.pe_embedding = torch.nn.Embedding.from_pretrained(torch.zeros(145469, 5120))
gen = torch.Generator().manual_seed(seed)
def hankel(rows, cols, std):
    base = torch.randn(rows + cols - 1, generator=gen) * std
    return torch.as_strided(base, (rows, cols), (1, 1))
owner = {}
for name, mod in model.named_modules():
    for key, _ in mod.named_parameters(recurse=False):
        owner[f"{name}.{key}" if name else key] = mod
state = {}
for name, meta in model.state_dict().items():
    mod = owner.get(name)
    if name == "pos_encoder.pe":
        state[name] = module.PositionalEncoding(1280, 0.05).pe.contiguous()  # deterministic sinusoid
    elif name == "pe_embedding.weight":
        state[name] = (hankel(*meta.shape, 1.0) if shape == "real"
                       else torch.zeros(1, 1).expand(*meta.shape))  # replaced by all_tokens in a tiny model
    elif isinstance(mod, torch.nn.LayerNorm):
        state[name] = torch.ones(meta.shape) if name.endswith("weight") else torch.zeros(meta.shape)
    elif name == "transformer_encoder.layers.0.self_attn.in_proj_weight":
        # the first layer sees the token encodings times sqrt(1280) (TransformerModel.forward): scaled down
        # likewise, or its attention logits reach ~1e3 and a cell's embedding turns on rounding noise
        state[name] = hankel(*meta.shape, 1.0 / meta.shape[1])
    elif meta.dim() == 2:
        state[name] = hankel(*meta.shape, 1.0 / math.sqrt(meta.shape[1]))
    else:  # biases
        state[name] = torch.randn(meta.shape, generator=gen) * 0.02
torch.save(state, out)
print(sum(p.numel() for n, p in model.named_parameters() if not n.startswith("pe_embedding")))
"""


def build(ctx: FixtureContext, spec: ModelSpec) -> dict[str, Any]:
    import torch

    name = spec.helical_model_name
    dims = REAL[name] if ctx.shape == "real" else TINY
    # UCE is keyed on symbols: the embedding files keep their case, species_chrom.csv lists them upper-cased
    symbols = list({s.upper(): s for s in reversed(ctx.symbols)}.values())[::-1]
    species = list(files.SPECIES_FILES)
    n_genes = len(symbols)

    # token table: species blocks at their offsets, then the chromosome rows
    offsets = {sp: i * n_genes for i, sp in enumerate(species)}
    n_gene_rows = len(species) * n_genes
    n_chrom = len(species) * len(CHROMOSOMES)
    if ctx.shape == "real":  # the real table's size: helical then appends its chromosome rows
        assert n_gene_rows <= REAL_TOKENS and n_chrom <= REAL_CHROM_ROWS, "too many fixture genes for shape=real"
        rows, chrom_offset = REAL_TOKENS, REAL_TOKENS
    else:
        rows, chrom_offset = n_gene_rows + n_chrom, n_gene_rows
    gen = torch.Generator().manual_seed(ctx.stable_seed("uce-tokens"))
    if ctx.shape == "real":
        base = torch.randn(rows + dims["token_dim"] - 1, generator=gen)
        tokens = torch.as_strided(base, (rows, dims["token_dim"]), (1, 1))
    else:
        tokens = torch.randn(rows, dims["token_dim"], generator=gen)
    ctx.write(files.TOKENS, torch_bytes(tokens))
    for sp in species:  # the embedding of gene i of a species is its token row (as in UCE's own files)
        block = tokens[offsets[sp] : offsets[sp] + n_genes]
        block = block if ctx.shape == "real" else block.clone()  # one storage a file
        ctx.write(files.protein_embeddings(sp), torch_bytes({s: block[i] for i, s in enumerate(symbols)}))
    ctx.write(files.OFFSETS, json_bytes(offsets))
    ctx.write(files.CHROM_CSV, _chrom_csv(symbols, species, np.random.default_rng(ctx.stable_seed("uce-chrom"))))

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model.torch"
        stdout = run_child(_CHILD, dims, ctx.stable_seed(name), ctx.shape, str(out))
        parameters = int(stdout.strip().splitlines()[-1])
        ctx.write(files.checkpoint(name), out.read_bytes())
    if ctx.shape == "tiny":
        ctx.write(files.args_file(name), json_bytes({**dims, "CHROM_TOKEN_OFFSET": chrom_offset, "fixture": True}))
    return {"hidden_size": dims["output_dim"], "layers": dims["n_layers"], "parameters": parameters,
            "sample_size": dims["sample_size"]}  # fmt: skip


def _chrom_csv(symbols: list[str], species: list[str], rng: np.random.Generator) -> bytes:
    """species_chrom.csv: each gene of each species on a random chromosome at a random start."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["species", "chromosome", "start", "gene_symbol"])
    for sp in species:
        chroms = rng.choice(len(CHROMOSOMES), size=len(symbols))
        starts = rng.integers(1, 200_000_000, size=len(symbols))
        for symbol, c, start in zip(symbols, chroms, starts, strict=True):
            writer.writerow([sp, CHROMOSOMES[c], int(start), symbol.upper()])
    return buffer.getvalue().encode()
