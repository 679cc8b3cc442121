"""Every family with an offline fixture, through real helical on that fixture: no mocks, no network.

helical reads CACHE_DIR_HELICAL_PREFIX once, when first imported, so everything that imports helical
runs in a child process pointed at the fixture cache (one per family); this test process never imports helical.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pytest

from helical_airflow.errors import ConfigError
from helical_airflow.models import FAMILIES as REGISTRY
from helical_airflow.models import FAMILY_DEFAULTS, get_model, is_fixture_cache, registry
from helical_airflow.models import cache as model_cache
from helical_airflow.models.fixture import FIXTURE_FAMILIES, build_fixture, default_genes

# single-cell families (an .h5ad); the sequence families' own test is tests/integration/test_sequence_models.py
FAMILIES = tuple(name for name in FIXTURE_FAMILIES if not REGISTRY[name].models[0].is_sequence)

# Embeds with one family's default model and stores what the tests compare.
# argv: cache, sample, out dir, n cells, split, family
CHILD = r"""
import json, os, sys
import anndata as ad, numpy as np, scipy.sparse as sp
from helical_airflow.errors import ConfigError
from helical_airflow.models import get_model, registry
from helical_airflow.models.fixture_io import gene_table, default_genes

cache, sample, out, name = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[6]
n, split = int(sys.argv[4]), int(sys.argv[5])
adata = ad.read_h5ad(sample)[:n].copy()
obs_before = list(adata.obs.columns)
to_ensembl = {s: e for e, s in gene_table(default_genes(), 0)}
report = {}
spec = get_model(name)
runner = registry.load_runner(
    spec, device="cpu", precision="fp32", batch_size=spec.profile.batch_size, engine=spec.profile.engine, seed=0,
    options=registry.resolve_options(spec, {}),
)
full = runner.embed(adata)
parts = np.vstack([runner.embed(adata[:split]), runner.embed(adata[split:])])
np.save(f"{out}/{name}_full.npy", full)
np.save(f"{out}/{name}_parts.npy", parts)
rec = {"dim": runner.embedding_dim, "precision": runner.precision, "obs_after": list(adata.obs.columns)}
if n <= 100:
    # the same cells with Ensembl ids as var_names: helical maps them through its own table
    ens = adata.copy()
    ens.var_names = [to_ensembl[g] for g in adata.var_names]
    np.save(f"{out}/{name}_ensembl.npy", runner.embed(ens))
    # the same cells shuffled, stored as CSC float32: rows come back in the shuffled order
    order = np.random.default_rng(0).permutation(adata.n_obs)
    shuffled = ad.AnnData(X=sp.csc_matrix(adata.X[order], dtype=np.float32))
    shuffled.var_names, shuffled.obs_names = list(adata.var_names), list(adata.obs_names[order])
    np.save(f"{out}/{name}_shuffled.npy", runner.embed(shuffled)[np.argsort(order)])
    # one extra cell expressing only a gene no model knows
    only_unknown = sp.csr_matrix(([7.0], ([0], [adata.n_vars])), shape=(1, adata.n_vars + 1))
    x = sp.vstack([sp.hstack([adata.X, sp.csr_matrix((n, 1))]), only_unknown])
    both = ad.AnnData(X=sp.csr_matrix(x, dtype=np.float32))
    both.var_names = list(adata.var_names) + ["NOT_A_GENE"]
    both.obs_names = list(adata.obs_names) + ["empty_cell"]
    np.save(f"{out}/{name}_with_empty.npy", runner.embed(both))
report[name] = rec
report["obs_before"] = obs_before

if n <= 100 and name == "scgpt":
    # helical skips checkpoint tensors that do not fit; our scGPT loader must refuse that
    import torch
    from helical.models.scgpt.model_dir import TransformerModel
    from helical_airflow.models.scgpt.adapter import check_fully_loaded
    vocab = json.load(open(f"{cache}/.cache/helical/models/scgpt/scGPT_CP/vocab.json"))
    wrong = TransformerModel(ntoken=len(vocab), d_model=16, nhead=2, d_hid=16, nlayers=1, vocab=vocab)
    try:
        check_fully_loaded(wrong, f"{cache}/.cache/helical/models/scgpt/scGPT_CP/best_model.pt", get_model("scgpt"))
        report["mismatch"] = None
    except ConfigError as err:
        report["mismatch"] = err.code
json.dump(report, open(f"{out}/report.json", "w"))
"""


def run_child(cache: str, sample: Path, out: Path, n: int, split: int, family: str) -> tuple[dict[str, Any], str]:
    env = {**os.environ, "CACHE_DIR_HELICAL_PREFIX": cache}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, cache, str(sample), str(out), str(n), str(split), family],
        capture_output=True, text=True, env=env, timeout=900, check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads((out / "report.json").read_text()), done.stdout + done.stderr


_SMALL: dict[str, Any] = {}


@pytest.fixture(params=FAMILIES)
def small_run(request: pytest.FixtureRequest, fixture_cache: str, sample_h5ad: Path,
              tmp_path_factory: pytest.TempPathFactory) -> Any:  # fmt: skip
    """One child process per family (60 cells), shared by the tests below; (family, out dir, report, logs)."""
    family = request.param
    if family not in _SMALL:
        out = tmp_path_factory.mktemp(f"embed_small_{family}")
        report, logs = run_child(fixture_cache, sample_h5ad, out, n=60, split=23, family=family)
        _SMALL[family] = (family, out, report, logs)
    return _SMALL[family]


def atol(family: str) -> float:
    """How close a cell's embedding must be across shardings: 1e-5 unless the family documents a reason."""
    return REGISTRY[family].shard_atol


@pytest.mark.slow  # shares the family's child process
def test_embeddings_are_finite_with_the_runner_dimension(small_run: Any) -> None:
    name, out, report, _ = small_run
    full = np.load(out / f"{name}_full.npy")
    assert full.dtype == np.float32
    assert full.shape == (60, report[name]["dim"])
    assert np.isfinite(full).all()
    assert report[name]["precision"] == "fp32"  # CPU always runs fp32
    # random weights still separate cells: not one vector repeated
    assert np.ptp(full, axis=0).max() > 1e-4


@pytest.mark.slow  # shares the family's child process
def test_a_cell_does_not_depend_on_its_shard_mates(small_run: Any) -> None:
    name, out, _, _ = small_run
    np.testing.assert_allclose(np.load(out / f"{name}_parts.npy"), np.load(out / f"{name}_full.npy"), atol=atol(name))


@pytest.mark.slow  # shares the family's child process
def test_ensembl_ids_and_symbols_give_the_same_embeddings(small_run: Any) -> None:
    name, out, _, _ = small_run
    np.testing.assert_allclose(np.load(out / f"{name}_ensembl.npy"), np.load(out / f"{name}_full.npy"), atol=atol(name))


@pytest.mark.slow  # shares the family's child process
def test_shuffled_csc_float32_cells_give_the_same_embeddings(small_run: Any) -> None:
    name, out, _, _ = small_run
    np.testing.assert_allclose(np.load(out / f"{name}_shuffled.npy"), np.load(out / f"{name}_full.npy"),
                               atol=atol(name))  # fmt: skip


@pytest.mark.slow  # shares the family's child process
def test_a_cell_with_no_known_gene_gets_nan_and_spares_the_others(small_run: Any) -> None:
    name, out, _, logs = small_run
    with_empty = np.load(out / f"{name}_with_empty.npy")
    assert with_empty.shape[0] == 61
    assert np.isnan(with_empty[-1]).all()
    np.testing.assert_allclose(with_empty[:-1], np.load(out / f"{name}_full.npy"), atol=atol(name))
    assert "express no gene" in logs


@pytest.mark.slow  # shares the family's child process
def test_callers_anndata_is_not_modified(small_run: Any) -> None:
    name, _, report, _ = small_run
    assert report[name]["obs_after"] == report["obs_before"]


@pytest.mark.slow  # shares the family's child process
def test_no_network_is_attempted(small_run: Any) -> None:
    _, _, _, logs = small_run
    for sign in ("Could not reach", "Downloading", "Starting to download", "Could not check"):
        assert sign not in logs


@pytest.mark.slow
def test_scgpt_checkpoint_that_does_not_fit_is_refused(fixture_cache: str, sample_h5ad: Path, tmp_path: Path) -> None:
    report, _ = run_child(fixture_cache, sample_h5ad, tmp_path, n=30, split=10, family="scgpt")
    assert report["mismatch"] == "E223"


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_more_cells_split_unevenly_equal_one_call(name: str, fixture_cache: str, sample_h5ad: Path,
                                                  tmp_path: Path) -> None:  # fmt: skip
    """200 cells split 80/120 (more than a batch, across cell types). The whole 700-cell sample goes through every
    family in scripts/run_sample.sh; here fewer cells keep CI within its time (Tahoe runs batch 1 on a CPU)."""
    report, _ = run_child(fixture_cache, sample_h5ad, tmp_path, n=200, split=80, family=name)
    full = np.load(tmp_path / f"{name}_full.npy")
    assert full.shape == (200, report[name]["dim"]) and np.isfinite(full).all()
    np.testing.assert_allclose(np.load(tmp_path / f"{name}_parts.npy"), full, atol=atol(name))


def test_cache_layout_matches_helicals_own_configs() -> None:
    """Each family's files.py lists what helical's own config downloads (each family's `helical_files` in its
    files.py builds helical's config and reads its list), for every model and the default options."""
    code = r"""
import json, importlib
from helical_airflow.models import FAMILIES, registry
out = {}
for family in FAMILIES.values():
    files = importlib.import_module(family.package + ".files")
    for spec in family.models:
        out[spec.name] = files.helical_files(spec.helical_model_name, registry.resolve_options(spec, {}))
print(json.dumps(out))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    helical_lists = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(helical_lists) == {s.name for f in REGISTRY.values() for s in f.models}
    for name, files in helical_lists.items():
        spec = get_model(name)
        assert registry.required_files(spec, registry.resolve_options(spec, {})) == files, name


def test_fixture_vocabulary_covers_the_sample(fixture_cache: str, sample_h5ad: Path) -> None:
    genes = set(ad.read_h5ad(sample_h5ad, backed="r").var_names)
    assert is_fixture_cache(fixture_cache)
    for name in ("gf-6L-10M-i2048", *FAMILIES):
        spec = get_model(name)
        vocab = registry.gene_vocabulary(spec, registry.resolve_options(spec, {}), fixture_cache)
        assert genes <= vocab.symbols
        assert len(vocab.ensembl) == len(genes)
        assert all(e.startswith("ENSG9") for e in vocab.ensembl)  # synthetic, never a real id


def test_fixture_marker_says_weights_are_random(fixture_cache: str) -> None:
    info = model_cache.fixture_info(fixture_cache)
    assert info is not None and info["fixture"] is True and info["weights"] == "random"
    assert {FAMILY_DEFAULTS[f] for f in FAMILIES} <= set(info["models"])
    for name in info["models"]:
        spec = get_model(name)
        assert registry.weights_files(spec, registry.resolve_options(spec, {}), fixture_cache)


def test_fixture_rebuild_rewrites_nothing(fixture_cache: str) -> None:
    files = sorted(p for p in Path(fixture_cache).rglob("*") if p.is_file())
    before = {p: p.stat().st_mtime_ns for p in files}
    again = build_fixture(Path(fixture_cache))
    assert again["written"] == []
    assert {p: p.stat().st_mtime_ns for p in files} == before


def test_real_shape_and_synthetic_genes(tmp_path: Path) -> None:
    info = build_fixture(
        tmp_path, families=("geneformer",), models=["gf-6L-10M-i2048"], shape="real",
        n_synthetic_genes=50, genes=default_genes()[:20],
    )
    root = model_cache.models_dir(str(tmp_path))
    config = json.loads((root / "geneformer/v1/gf-6L-10M-i2048/config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["max_position_embeddings"]) == (256, 6, 2048)
    assert config["vocab_size"] == 2 + 20 + 50
    vocab = registry.gene_vocabulary(get_model("gf-6L-10M-i2048"), {}, str(tmp_path))
    assert "SYNTH00050" in vocab.symbols and len(vocab.symbols) == 70
    assert info["models"]["gf-6L-10M-i2048"]["shape"] == "real"


def test_fixture_refuses_to_write_into_a_real_cache(tmp_path: Path) -> None:
    real = model_cache.models_dir(str(tmp_path)) / "scgpt" / "scGPT_CP"
    real.mkdir(parents=True)
    (real / "best_model.pt").write_bytes(b"real weights")
    with pytest.raises(ConfigError) as err:
        build_fixture(tmp_path, families=("geneformer",), models=["gf-6L-10M-i2048"])
    assert err.value.code == "E226"
    assert (real / "best_model.pt").read_bytes() == b"real weights"


def test_a_build_cut_short_is_still_a_fixture(tmp_path: Path) -> None:
    # the marker is written before anything else, so a crashed build can be rebuilt in place
    with pytest.raises(ConfigError):
        build_fixture(tmp_path, families=("geneformer",), models=["not-a-model"])
    assert not (tmp_path / model_cache.FIXTURE_MARKER).exists()  # argument errors write nothing
    build_fixture(tmp_path, families=("geneformer",), models=["gf-6L-10M-i2048"])
    (tmp_path / model_cache.FIXTURE_MARKER).write_text(json.dumps({"fixture": True, "complete": False}))
    info = build_fixture(tmp_path, families=("geneformer",), models=["gf-6L-10M-i2048"])
    assert info["written"] == [str(tmp_path / model_cache.FIXTURE_MARKER)]  # only the marker was missing


def test_fixture_for_a_family_without_one_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        build_fixture(tmp_path, families=("no-such-family",))
    assert err.value.code == "E224"
