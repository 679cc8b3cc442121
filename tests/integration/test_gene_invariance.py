"""The same cells give the same embeddings whatever the file's layout (issue 22), for every single-cell family.

Each family embeds a slice of the real sample as shipped and the same cells laid out otherwise, every layout
written to an .h5ad and read back the way a shard is (h5io.read_shard): genes in random column orders, renamed to
Ensembl ids (helical's table: the fixture's synthetic ENSG9... ids) with and without a version suffix `.N`, a mix
of both systems, the symbols kept in a `var` column, X stored as CSR, CSC or dense, and the cells split across two
files of different layouts. Every layout must give the original's embeddings (the family's `layout_atol`), and the
runner must report the same canonical gene list (the hash the manifest records). Real helical on the fixture
models, in one child process per family (helical reads its cache prefix once, at import).
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

from helical_airflow.models import FAMILIES as REGISTRY
from helical_airflow.models.fixture import FIXTURE_FAMILIES
from helical_airflow.pipeline import run
from helical_airflow.spec import RunParams

FAMILIES = tuple(name for name in FIXTURE_FAMILIES if not REGISTRY[name].models[0].is_sequence)
N_CELLS = 32  # enough cells with tied counts (every family's order-dependence showed on 48; 32 keeps CI time down)
LAYOUTS = ("permuted", "ensembl_versioned", "ensembl", "mixed", "split")

# argv: sample, out dir, n cells, family
CHILD = r"""
import json, sys, logging, warnings
warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)
import anndata as ad, numpy as np, pandas as pd, scipy.sparse as sp
from helical_airflow import h5io
from helical_airflow.models import get_model, registry
from helical_airflow.models.fixture_io import gene_table, default_genes

sample, out, n, name = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
base = ad.read_h5ad(sample)[:n].copy()
symbols = list(base.var_names)
to_ensembl = {s: e for e, s in gene_table(default_genes(), 0)}
rng = np.random.default_rng(22)

def layout(cells, order, names, fmt):
    x = base.X[cells][:, order]
    x = {"csr": sp.csr_matrix, "csc": sp.csc_matrix, "dense": lambda m: np.asarray(m.todense())}[fmt](x)
    var = pd.DataFrame({"gene_symbol": [symbols[i] for i in order]}, index=[names[i] for i in order])
    return ad.AnnData(X=x, obs=base.obs.iloc[cells].copy(), var=var)

def versioned(s):
    return f"{to_ensembl[s]}.{rng.integers(1, 40)}"

all_cells, identity = np.arange(n), np.arange(len(symbols))
ens = [to_ensembl[s] for s in symbols]
ens_v = [versioned(s) for s in symbols]
mixed = [ens_v[i] if rng.random() < 0.5 else s for i, s in enumerate(symbols)]
perm = lambda: rng.permutation(len(symbols))
half = n // 3
files = {
    "original": [layout(all_cells, identity, symbols, "csr")],
    "permuted": [layout(all_cells, perm(), symbols, "csr")],
    "ensembl_versioned": [layout(all_cells, perm(), ens_v, "csc")],
    "ensembl": [layout(all_cells, perm(), ens, "dense")],
    "mixed": [layout(all_cells, perm(), mixed, "csr")],
    "split": [layout(all_cells[:half], perm(), ens_v, "csc"), layout(all_cells[half:], perm(), symbols, "csr")],
}
spec = get_model(name)
runner = registry.load_runner(
    spec, device="cpu", precision="fp32", batch_size=spec.profile.batch_size, engine=spec.profile.engine, seed=0,
    options=registry.resolve_options(spec, {}),
)
report = {}
for key, parts in files.items():
    embedded, genes = [], []
    for i, part in enumerate(parts):
        path = f"{out}/{key}_{i}.h5ad"
        part.write_h5ad(path)
        shard = h5io.read_shard(path, 0, part.n_obs)
        embedded.append(runner.embed(shard))
        seen = getattr(runner, "canonical_genes", None)
        genes.append(None if seen is None else [seen.sha256, seen.count])
    np.save(f"{out}/{key}.npy", np.vstack(embedded))
    report[key] = genes
json.dump(report, open(f"{out}/report.json", "w"))
"""

_RUNS: dict[str, Any] = {}


@pytest.fixture(params=FAMILIES)
def layouts(request: pytest.FixtureRequest, fixture_cache: str, sample_h5ad: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Any:  # fmt: skip
    """One child process per family, shared by the tests below: (family, out dir, report)."""
    family = request.param
    if family not in _RUNS:
        out = tmp_path_factory.mktemp(f"layouts_{family}")
        env = {**os.environ, "CACHE_DIR_HELICAL_PREFIX": fixture_cache}
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(sample_h5ad), str(out), str(N_CELLS), family],
            capture_output=True, text=True, env=env, timeout=900, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-4000:]
        _RUNS[family] = (family, out, json.loads((out / "report.json").read_text()))
    return _RUNS[family]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_gives_the_original_embeddings(layouts: Any, layout: str) -> None:
    family, out, _ = layouts
    original, other = np.load(out / "original.npy"), np.load(out / f"{layout}.npy")
    assert original.shape == other.shape == (N_CELLS, original.shape[1])
    assert np.isfinite(original).all()
    np.testing.assert_allclose(other, original, atol=REGISTRY[family].layout_atol, rtol=0,
                               err_msg=f"{family}: {layout} differs from the sample as shipped")  # fmt: skip


def test_every_layout_reports_the_same_canonical_genes(layouts: Any) -> None:
    family, _, report = layouts
    original = report["original"][0]
    assert original is not None, f"{family} does not report the genes it saw"
    sha256, count = original
    assert len(sha256) == 64 and count > 0
    assert all(genes == original for key in LAYOUTS for genes in report[key]), report


@pytest.mark.slow
def test_two_layouts_give_manifests_with_the_same_canonical_gene_hash(
    sample_h5ad: Path, fixture_cache: str, tmp_path: Path
) -> None:
    """Through the whole pipeline (validate, plan, embed, merge): the sample and a permuted, Ensembl-versioned copy
    of it have different run keys (the files differ) but the same genes seen and the same embeddings."""
    import pandas as pd

    from helical_airflow.models.fixture_io import default_genes, gene_table

    sample = ad.read_h5ad(sample_h5ad)[:60].copy()
    to_ensembl = {s: e for e, s in gene_table(default_genes(), 0)}
    order = np.random.default_rng(7).permutation(sample.n_vars)
    copy = ad.AnnData(X=sample.X[:, order], obs=sample.obs.copy(),
                      var=pd.DataFrame({"gene_symbol": sample.var_names[order]},
                                       index=[f"{to_ensembl[s]}.3" for s in sample.var_names[order]]))  # fmt: skip
    manifests, embeddings = [], []
    for label, data in (("shipped", sample), ("relaid", copy)):
        path = tmp_path / f"{label}.h5ad"
        data.write_h5ad(path)
        params = RunParams(model="uce", shard_size=25, device="cpu", cache_dir=fixture_cache)
        manifest = run(path, params, tmp_path / "out")
        manifests.append(manifest)
        run_dir = tmp_path / "out" / manifest.dataset / manifest.run_key
        embeddings.append(ad.read_h5ad(run_dir / "embeddings.h5ad").obsm["X_uce"])
        on_disk = json.loads((run_dir / "manifest.json").read_text())
        assert on_disk["canonical_genes_sha256"] == manifest.canonical_genes_sha256
    shipped, relaid = manifests
    assert shipped.run_key != relaid.run_key
    assert shipped.canonical_genes_sha256 is not None and len(shipped.canonical_genes_sha256) == 64
    assert shipped.canonical_genes_sha256 == relaid.canonical_genes_sha256
    assert shipped.canonical_genes == relaid.canonical_genes == sample.n_vars
    assert {s.canonical_genes_sha256 for s in shipped.shards} == {shipped.canonical_genes_sha256}
    np.testing.assert_allclose(embeddings[1], embeddings[0], atol=REGISTRY["uce"].layout_atol, rtol=0)
