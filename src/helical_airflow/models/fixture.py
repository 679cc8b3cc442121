"""Offline fixture cache: tiny random-weight models and a synthetic gene vocabulary in helical's layout.

`build_fixture(out)` writes under `out/.cache/helical/models/` exactly the files helical's configs
download, so `CACHE_DIR_HELICAL_PREFIX=out` makes helical's own loading, `process_data` and
`get_embeddings` run for real, with no network. The weights are random (seeded): embeddings from a
fixture carry no biology, and `out/FIXTURE.json` says so; every run from such a cache is flagged.

Gene identifiers: real Ensembl ids for the sample's symbols cannot be had offline, so each gene gets
a synthetic id `ENSG9` + 10 digits. It matches helical's Ensembl pattern (so helical treats it as
one) and can never collide with a real id (those start `ENSG00`). helical's symbol <-> Ensembl
table (`hsapiens_pybiomart.csv`) is written with these pairs.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.resources
import io
import json
import logging
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import ConfigError
from . import cache
from .profiles import FAMILY_DEFAULTS, GENEFORMER_MODEL_NAMES
from .runner import is_ensembl
from .vocab import SPECIAL_TOKENS

log = logging.getLogger(__name__)

Shape = Literal["tiny", "real"]
FIXTURE_FAMILIES = ("geneformer", "scgpt")
FIXTURE_VERSION = 1  # bump when the files written for the same arguments change

#: true architecture of each Geneformer model (from the published config.json files)
GENEFORMER_REAL = {
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
GENEFORMER_TINY = {"layers": 2, "hidden": 32, "heads": 2, "intermediate": 64}

SCGPT_REAL = {"embsize": 512, "nheads": 8, "d_hid": 512, "nlayers": 12, "n_layers_cls": 3}
SCGPT_TINY = {"embsize": 32, "nheads": 2, "d_hid": 64, "nlayers": 2, "n_layers_cls": 1}


def default_genes() -> list[str]:
    """The sample's gene symbols (written by scripts/make_sample.py)."""
    text = importlib.resources.files("helical_airflow.models").joinpath("fixture_genes.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


def synthetic_ensembl_id(index: int) -> str:
    return f"ENSG9{index:010d}"


def gene_table(genes: Sequence[str], n_synthetic_genes: int) -> list[tuple[str, str]]:
    """(ensembl_id, symbol) for every fixture gene; an input that is already an Ensembl id keeps it."""
    names = list(dict.fromkeys(genes)) + [f"SYNTH{i:05d}" for i in range(1, n_synthetic_genes + 1)]
    return [(name, "") if is_ensembl(name) else (synthetic_ensembl_id(i), name) for i, name in enumerate(names, 1)]


def build_fixture(
    out: Path,
    families: Iterable[str] = FIXTURE_FAMILIES,
    genes: list[str] | None = None,
    n_synthetic_genes: int = 0,
    shape: Shape = "tiny",
    seed: int = 0,
    geneformer_models: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Write the fixture cache under `out` and return what FIXTURE.json records.

    geneformer_models: which Geneformer models to write; default every one helical accepts for
    shape="tiny" (a few hundred KB each) and only the `geneformer` default for shape="real".
    Idempotent: a file whose bytes would not change is not rewritten.
    """
    out = Path(out).resolve()
    families = tuple(dict.fromkeys(families))
    unknown = [f for f in families if f not in FIXTURE_FAMILIES]
    if unknown:
        raise ConfigError(
            "E224",
            f"no fixture for model family {', '.join(unknown)}: only {', '.join(FIXTURE_FAMILIES)} have one",
            "UCE and TranscriptFormer need their real weights (see docs/models.md)",
        )
    if shape not in ("tiny", "real"):
        raise ConfigError("E225", f"unknown fixture shape {shape!r}", "use tiny or real")
    if geneformer_models is None:
        geneformer_models = GENEFORMER_MODEL_NAMES if shape == "tiny" else (FAMILY_DEFAULTS["geneformer"],)
    bad = [m for m in geneformer_models if m not in GENEFORMER_REAL]
    if bad:
        raise ConfigError("E201", f"unknown Geneformer model(s) {bad}", f"pick from {', '.join(GENEFORMER_REAL)}")
    _refuse_real_cache(out)

    table = gene_table(genes if genes is not None else default_genes(), n_synthetic_genes)
    key = _build_key(families, table, shape, seed, geneformer_models)
    previous = cache.fixture_info(str(out)) or {}
    if _unchanged(out, previous.get("builds", {}).get(key)):
        return {**previous, "written": []}  # same arguments, files intact: nothing to do
    root = cache.models_dir(str(out))
    written: list[str] = []
    if not previous:  # claim the folder first, so a build cut short is still known to be a fixture
        _write(out / cache.FIXTURE_MARKER, _json({"fixture": True, "weights": "random", "complete": False}), [])
    _write(root / cache.ENSEMBL_MAPPING_FILE, _mapping_csv(table), written)
    models: dict[str, dict[str, Any]] = {}
    if "geneformer" in families:
        for name in geneformer_models:
            models[name] = _build_geneformer(root, name, table, shape, seed, written)
    if "scgpt" in families:
        models["scgpt"] = _build_scgpt(root, table, shape, seed, written)

    marker = _merge_marker(previous, models, table, n_synthetic_genes, seed)
    marker["builds"][key] = {rel: _sha256(out / rel) for rel in sorted(_files_of(out, models))}
    _write(out / cache.FIXTURE_MARKER, (json.dumps(marker, indent=2, sort_keys=True) + "\n").encode(), written)
    log.info("fixture cache %s: %d file(s) written, %d model(s)", out, len(written), len(models))
    marker["written"] = written
    return marker


def _refuse_real_cache(out: Path) -> None:
    root = cache.models_dir(str(out))
    if root.is_dir() and any(root.iterdir()) and not cache.is_fixture_cache(str(out)):
        raise ConfigError(
            "E226",
            f"{out} already holds a helical cache that is not a fixture; random weights would overwrite real ones",
            "pass an empty or fixture folder to --out",
        )


def _write(path: Path, data: bytes, written: list[str]) -> None:
    """Write atomically, and only when the content changes (keeps re-runs from touching files)."""
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
        handle.write(data)
    Path(handle.name).replace(path)
    written.append(str(path))


def _mapping_csv(table: list[tuple[str, str]]) -> bytes:
    """helical reads it with pandas.read_csv(index_col=0): an unnamed index, then ensembl_id, gene_name."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["", "ensembl_id", "gene_name"])
    for i, (ensembl_id, symbol) in enumerate(table):
        writer.writerow([i, ensembl_id, symbol])
    return buffer.getvalue().encode()


def _json(obj: Any) -> bytes:
    return json.dumps(obj, indent=1).encode()


def _save_quietly(model: Any, directory: str) -> None:
    """`save_pretrained` without transformers' per-file "Writing model shards" progress bar (one per model)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(directory)
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _torch_bytes(obj: Any) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _stable_seed(seed: int, name: str) -> int:
    return (seed * 1_000_003 + int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)) % 2**31


def _build_geneformer(
    root: Path, name: str, table: list[tuple[str, str]], shape: Shape, seed: int, written: list[str]
) -> dict[str, Any]:
    import torch
    from transformers import BertConfig, BertForMaskedLM

    paths = cache.geneformer_paths(name)
    version = cache.GENEFORMER_VERSION[name]
    specials = ["<pad>", "<mask>"] + (["<cls>", "<eos>"] if version != "v1" else [])
    ids = [ensembl_id for ensembl_id, _ in table]
    tokens = {tok: i for i, tok in enumerate(specials + ids)}
    rng = np.random.default_rng(_stable_seed(seed, "medians"))
    medians = {e: float(round(m, 6)) for e, m in zip(ids, rng.lognormal(0.5, 1.0, len(ids)), strict=True)}
    # the real mapping dictionary maps both Ensembl ids and upper-case symbols to Ensembl ids
    mapping = {e: e for e in ids} | {s.upper(): e for e, s in table if s}
    _write(root / paths["token"], _json(tokens), written)
    _write(root / paths["median"], _json(medians), written)
    _write(root / paths["mapping"], _json(mapping), written)

    dims = GENEFORMER_REAL[name] if shape == "real" else GENEFORMER_TINY
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
    torch.manual_seed(_stable_seed(seed, name))
    model = BertForMaskedLM(config).eval()
    model_dir = root / Path(paths["weights"]).parent
    with tempfile.TemporaryDirectory() as tmp:
        _save_quietly(model, tmp)  # config.json + model.safetensors
        _write(root / paths["config"], (Path(tmp) / "config.json").read_bytes(), written)
        if paths["weights"].endswith(".safetensors"):
            _write(root / paths["weights"], (Path(tmp) / "model.safetensors").read_bytes(), written)
        else:  # v1 checkpoints are pickled state dicts, which transformers still loads
            state = {k: v.contiguous() for k, v in model.state_dict().items()}
            _write(root / paths["weights"], _torch_bytes(state), written)
    _write(root / paths["training_args"], _torch_bytes({"fixture": True, "note": "helical never reads this"}), written)
    return {
        "family": "geneformer",
        "shape": shape,
        "dir": str(model_dir.relative_to(root)),
        "hidden_size": dims["hidden"],
        "layers": dims["layers"],
        "parameters": int(sum(p.numel() for p in model.parameters())),
    }


def _build_scgpt(
    root: Path, table: list[tuple[str, str]], shape: Shape, seed: int, written: list[str]
) -> dict[str, Any]:
    symbols = [s for _, s in table if s and s not in SPECIAL_TOKENS]
    vocab = {tok: i for i, tok in enumerate(["<pad>", "<cls>", "<eoc>", *symbols])}
    dims = SCGPT_REAL if shape == "real" else SCGPT_TINY
    model_dir = root / "scgpt" / "scGPT_CP"
    _write(model_dir / "vocab.json", _json(vocab), written)
    _write(model_dir / "args.json", _json({**dims, "fixture": True}), written)
    weights, parameters = _scgpt_weights(len(vocab), dims, _stable_seed(seed, "scgpt"))
    _write(model_dir / "best_model.pt", weights, written)
    return {
        "family": "scgpt",
        "shape": shape,
        "dir": "scgpt/scGPT_CP",
        "hidden_size": dims["embsize"],
        "layers": dims["nlayers"],
        "parameters": parameters,
    }


# Runs in a child process: importing helical fixes its cache prefix for the whole process (it reads
# CACHE_DIR_HELICAL_PREFIX once), and the process that builds a fixture often embeds with it next.
_SCGPT_CHILD = """
import io, json, sys, torch
from helical.models.scgpt.model_dir import TransformerModel
ntoken, dims, seed, out = json.loads(sys.argv[1])
vocab = {"<pad>": 0}
torch.manual_seed(seed)
# the constructor arguments helical's scgpt_utils.load_model uses
model = TransformerModel(
    ntoken=ntoken, d_model=dims["embsize"], nhead=dims["nheads"], d_hid=dims["d_hid"],
    nlayers=dims["nlayers"], nlayers_cls=dims["n_layers_cls"], n_cls=1, vocab=vocab, dropout=0.2,
    pad_token="<pad>", pad_value=-2, do_mvc=True, do_dab=False, use_batch_labels=False,
    domain_spec_batchnorm=False, explicit_zero_prob=False, pre_norm=False,
).eval()
torch.save({k: v.contiguous() for k, v in model.state_dict().items()}, out)
print(sum(p.numel() for p in model.parameters()))
"""


def _scgpt_weights(ntoken: int, dims: dict[str, int], seed: int) -> tuple[bytes, int]:
    """helical's own scGPT TransformerModel, randomly initialised, as best_model.pt bytes."""
    import subprocess
    import sys

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "best_model.pt"
        done = subprocess.run(
            [sys.executable, "-c", _SCGPT_CHILD, json.dumps([ntoken, dims, seed, str(out)])],
            capture_output=True, text=True, check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"building the scGPT fixture failed:\n{done.stderr[-2000:]}")
        return out.read_bytes(), int(done.stdout.strip().splitlines()[-1])


def _build_key(
    families: tuple[str, ...], table: list[tuple[str, str]], shape: str, seed: int, geneformer_models: Sequence[str]
) -> str:
    args = {
        "families": sorted(families), "genes": _genes_hash(table), "shape": shape, "seed": seed,
        "geneformer_models": sorted(geneformer_models) if "geneformer" in families else [],
        "version": FIXTURE_VERSION,
    }
    return hashlib.sha256(json.dumps(args, sort_keys=True).encode()).hexdigest()[:16]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files_of(out: Path, models: dict[str, dict[str, Any]]) -> list[str]:
    """Every file of the built models, relative to `out`."""
    from .profiles import get_model

    prefix = cache.models_dir(str(out)).relative_to(out)
    files = {str(prefix / cache.ENSEMBL_MAPPING_FILE)}
    for name in models:
        files.update(str(prefix / rel) for rel in get_model(name).required_files())
    if "scgpt" in models:
        files.add(str(prefix / "scgpt" / "scGPT_CP" / "args.json"))
    return sorted(files)


def _unchanged(out: Path, recorded: dict[str, str] | None) -> bool:
    return bool(recorded) and all(
        (out / rel).is_file() and _sha256(out / rel) == digest for rel, digest in (recorded or {}).items()
    )


def _genes_hash(table: list[tuple[str, str]]) -> str:
    return hashlib.sha256("\n".join(f"{e}\t{s}" for e, s in table).encode()).hexdigest()[:16]


def _merge_marker(
    previous: dict[str, Any], models: dict[str, dict[str, Any]], table: list[tuple[str, str]], n_synthetic: int,
    seed: int,
) -> dict[str, Any]:
    """FIXTURE.json: what was built; a later build into the same folder adds its models."""
    genes_hash = _genes_hash(table)
    if previous and previous.get("genes_sha256") != genes_hash:
        previous = {}  # a different vocabulary replaced every vocabulary file: older entries are stale
    return {
        "fixture": True,
        "fixture_version": FIXTURE_VERSION,
        "note": "random weights and a synthetic gene vocabulary written by `helical-airflow models fixture`; "
        "embeddings from this cache carry no biology",
        "weights": "random",
        "seed": seed,
        "n_genes": len(table),
        "n_synthetic_genes": n_synthetic,
        "genes_sha256": genes_hash,
        "ensembl_ids": "synthetic (ENSG9 + 10 digits; real ids start ENSG00)",
        "models": {**previous.get("models", {}), **models},
        "builds": dict(previous.get("builds", {})),  # argument hash -> sha256 of each file it wrote
    }
