"""A tiny random TranscriptFormer in helical's layout, for each of tf_sapiens, tf_exemplar and tf_metazoa.

What helical 3.1.4's `TranscriptFormer.__init__` reads from `transcriptformer/<model>/`:
- `config.json`: the checkpoint's hydra config (`model._target_` and its `data_config`, `model_config`,
  `loss_config`), merged under helical's own settings; `data_config.esm2_mappings` names the vocab files the
  gene vocabulary is built from (the species the model was trained on);
- `vocabs/<species>_gene.h5`: ESM2 protein embeddings per gene, in the layout helical's
  `utils.load_from_hdf5` reads: a `keys` dataset of byte strings and an `arrays` group with one dataset per key;
- `vocabs/assay_vocab.json`: the assay (aux token) vocabulary, `{"unknown": 0, ...}`;
- `model_weights.pt`: the state dict of helical's own `Transcriptformer`, loaded strictly.
homo_sapiens holds the fixture's genes (ctx.table's synthetic Ensembl ids, so the sample's 765 genes are known);
every other species gets a few synthetic ids of its own. The weights come from helical's own class, randomly
initialised, in a child process (fixture_io.run_child).
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from ..fixture_io import FixtureContext, json_bytes, run_child
from .files import SPECIES, TRAINED_ON, model_dir

if TYPE_CHECKING:
    from ..profiles import ModelSpec

#: the published architecture (helical's ModelConfig docstring; ESM2-3B gene embeddings are 2560 wide)
REAL = {
    "embed_dim": 2048, "num_heads": 16, "num_layers": 12, "model_dim": 2048, "seq_len": 2047, "aux_len": 1,
    "block_len": 128, "gene_head_hidden_dim": 2048, "esm_dim": 2560,
}  # fmt: skip
TINY = {
    "embed_dim": 32, "num_heads": 2, "num_layers": 2, "model_dim": 64, "seq_len": 255, "aux_len": 1,
    "block_len": 128, "gene_head_hidden_dim": 32, "esm_dim": 16,
}  # fmt: skip

SPECIAL_TOKENS = ["unknown", "[PAD]", "[START]", "[END]", "[RD]", "[CELL]", "[MASK]"]
ASSAYS = ["unknown", "10x 3' v2", "10x 3' v3", "10x 5' v1", "10x 5' v2", "Smart-seq2"]
N_OTHER_GENES = 4  # genes per non-human species: enough to exercise the vocab files, small enough to be free

#: synthetic gene ids per species, in the style of each species' real ids (Ensembl where Ensembl names them)
ID_STYLE = {
    "mus_musculus": "ENSMUSG9{:010d}", "danio_rerio": "ENSDARG9{:010d}", "gallus_gallus": "ENSGALG9{:010d}",
    "xenopus_laevis": "ENSXETG9{:010d}", "oryctolagus_cuniculus": "ENSOCUG9{:010d}",
    "canis_lupus_familiaris": "ENSCAFG9{:010d}", "rattus_norvegicus": "ENSRNOG9{:010d}",
    "sus_scrofa": "ENSSSCG9{:010d}", "macaca_fascicularis": "ENSMFAG9{:010d}",
    "drosophila_melanogaster": "FBgn9{:06d}", "caenorhabditis_elegans": "WBGene9{:07d}",
    "saccharomyces_cerevisiae": "YSYN9{:04d}W", "plasmodium_falciparum": "PF3D7_9{:06d}",
    "lytechinus_variegatus": "LVA9{:07d}", "spongilla_lacustris": "SLA9{:07d}",
}  # fmt: skip


def species_genes(ctx: FixtureContext, species: str) -> list[str]:
    if species == "homo_sapiens":
        return ctx.ensembl_ids
    return [ID_STYLE[species].format(i) for i in range(1, N_OTHER_GENES + 1)]


def gene_h5(genes: list[str], dim: int, seed: int) -> bytes:
    """helical's vocab .h5: `keys` (byte strings) and `arrays/<key>` (one float32 vector per gene)."""
    vectors = np.random.default_rng(seed).standard_normal((len(genes), dim)).astype(np.float32)
    buffer = io.BytesIO()
    with h5py.File(buffer, "w", track_order=False) as f:
        f.create_dataset("keys", data=np.array(genes, dtype="S"), track_times=False)
        arrays = f.create_group("arrays")
        for gene, vector in zip(genes, vectors, strict=True):
            arrays.create_dataset(gene, data=vector, track_times=False)
    return buffer.getvalue()


def config(model: str, dims: dict[str, int]) -> dict[str, Any]:
    """The checkpoint's config.json, in the original TranscriptFormer layout with helical's class paths."""
    pkg = "helical.models.transcriptformer"
    return {
        "fixture": True,
        "model": {
            "_target_": f"{pkg}.model_dir.model.Transcriptformer",
            "data_config": {
                "_target_": f"{pkg}.data.dataclasses.DataConfig",
                "aux_vocab_path": None, "pin_memory": True, "aux_cols": "assay", "gene_col_name": "ensembl_id",
                "clip_counts": 30, "filter_to_vocabs": True, "filter_outliers": 0.0, "pad_zeros": True,
                "normalize_to_scale": 0, "n_data_workers": 1, "sort_genes": False, "randomize_genes": False,
                "min_expressed_genes": 0, "gene_pad_token": "[PAD]", "aux_pad_token": "unknown",
                "esm2_mappings_path": None,
                "esm2_mappings": [f"{s}_gene.h5" for s in TRAINED_ON[model]],
                "special_tokens": SPECIAL_TOKENS,
            },
            "model_config": {
                "_target_": f"{pkg}.data.dataclasses.ModelConfig",
                "log_counts_eps": 1e-6, "num_heads": dims["num_heads"], "num_layers": dims["num_layers"],
                "model_dim": dims["model_dim"], "embed_dim": dims["embed_dim"], "dropout": 0.0, "activation": "gelu",
                "attn_bias": False, "fw_bias": False, "mu_link_fn": "softmax", "softcap": 10,
                "seq_len": dims["seq_len"], "aux_len": dims["aux_len"], "block_len": dims["block_len"],
                "gene_head_hidden_dim": dims["gene_head_hidden_dim"],
            },
            "loss_config": {
                "_target_": f"{pkg}.data.dataclasses.LossConfig", "gene_id_loss_weight": 1.0, "softplus_approx": True,
            },
        },
    }  # fmt: skip


# helical's own Transcriptformer, randomly initialised from each model's config and vocab files, exactly as
# helical's TranscriptFormer.__init__ builds it (load_vocabs_and_embeddings, then hydra's instantiate). One child
# for all three models: importing helical is most of a child's time.
_CHILD = """
import json, os, sys, torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from helical.models.transcriptformer.tokenizer.vocab import load_vocabs_and_embeddings
(jobs,) = json.loads(sys.argv[1])
for model_dir, seed in jobs:
    cfg = OmegaConf.create(json.load(open(os.path.join(model_dir, "config.json"))))
    cfg.model.data_config.aux_vocab_path = os.path.join(model_dir, "vocabs")
    cfg.model.data_config.esm2_mappings_path = os.path.join(model_dir, "vocabs")
    (gene_vocab, aux_vocab), emb_matrix = load_vocabs_and_embeddings(cfg)
    torch.manual_seed(seed)
    model = instantiate(cfg.model, gene_vocab_dict=gene_vocab, aux_vocab_dict=aux_vocab, emb_matrix=emb_matrix,
                        emb_mode="cell").eval()
    torch.save({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(model_dir, "model_weights.pt"))
    print(sum(p.numel() for p in model.parameters()))
"""

#: (shape, seed, genes) -> model -> (files, weights, parameters): what one child built for every model
_BUILT: dict[tuple[Any, ...], dict[str, tuple[dict[str, bytes], bytes, int]]] = {}


def model_files(ctx: FixtureContext, model: str) -> dict[str, bytes]:
    """Every file of the model but its weights, relative to its folder."""
    dims = REAL if ctx.shape == "real" else TINY
    out = {
        "config.json": json_bytes(config(model, dims)),
        "vocabs/assay_vocab.json": json_bytes({name: i for i, name in enumerate(ASSAYS)}),
    }
    for species in SPECIES[model]:
        seed = ctx.stable_seed(f"transcriptformer/{species}")  # the same ESM2 vectors for a species in every model
        out[f"vocabs/{species}_gene.h5"] = gene_h5(species_genes(ctx, species), dims["esm_dim"], seed)
    return out


def built(ctx: FixtureContext) -> dict[str, tuple[dict[str, bytes], bytes, int]]:
    key = (ctx.shape, ctx.seed, tuple(ctx.table))
    if key not in _BUILT:
        with tempfile.TemporaryDirectory() as tmp:
            staged: dict[str, dict[str, bytes]] = {}
            for model in SPECIES:
                staged[model] = model_files(ctx, model)
                for rel, data in staged[model].items():
                    (Path(tmp) / model / rel).parent.mkdir(parents=True, exist_ok=True)
                    (Path(tmp) / model / rel).write_bytes(data)
            jobs = [(str(Path(tmp) / model), ctx.stable_seed(model)) for model in SPECIES]
            counts = run_child(_CHILD, jobs).strip().splitlines()[-len(jobs) :]
            _BUILT[key] = {
                model: (staged[model], (Path(tmp) / model / "model_weights.pt").read_bytes(), int(n))
                for model, n in zip(SPECIES, counts, strict=True)
            }
    return _BUILT[key]


def build(ctx: FixtureContext, spec: ModelSpec) -> dict[str, Any]:
    model = spec.helical_model_name
    dims = REAL if ctx.shape == "real" else TINY
    files, weights, parameters = built(ctx)[model]
    for rel, data in files.items():
        ctx.write(f"{model_dir(model)}/{rel}", data)
    ctx.write(f"{model_dir(model)}/model_weights.pt", weights)
    return {"hidden_size": dims["embed_dim"], "layers": dims["num_layers"], "parameters": parameters,
            "seq_len": dims["seq_len"]}  # fmt: skip
