"""tokenize_fast.geneformer_tokens returns helical's `process_data` tokens, token for token.

Real helical in a child process (it reads CACHE_DIR_HELICAL_PREFIX at import) on the offline
fixture: data/sample.h5ad (gene symbols mapped through helical's table) with both vocabularies
(v1; v2 with <cls>/<eos> and truncation), plus edge cells: one gene, no known gene, more genes than
the input size, many tied values (equal counts on genes given equal medians, so the per-cell sort
must break ties exactly as helical's), a duplicated gene column (helical's collapse path), and the
obs columns helical reads as instructions (`n_counts`, `filter_pass`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from helical_airflow.models.fixture import build_fixture

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample.h5ad"
N_SYNTHETIC = 4_500
MODELS = ["gf-6L-10M-i2048", "gf-12L-38M-i4096"]

# argv: sample, out json, n synthetic genes
CHILD = r"""
import json, sys, warnings, logging
warnings.filterwarnings("ignore")
import numpy as np, pandas as pd, anndata as ad, scipy.sparse as sp
from helical.models.geneformer import Geneformer, GeneformerConfig
from helical_airflow.models import get_model, registry
from helical_airflow.models.geneformer.fast import Ragged
from helical_airflow.models.fixture_io import gene_table, default_genes
from helical_airflow.models.runner import helical_prefix, trust_cached_files
from helical_airflow.models.geneformer.tokenize_fast import geneformer_tokens

sample, out, n_synth = sys.argv[1], sys.argv[2], int(sys.argv[3])
logging.disable(logging.WARNING)
base = ad.read_h5ad(sample)[:150]
genes = [s for e, s in gene_table(default_genes(), n_synth)]
extra = [g for g in genes if g not in set(base.var_names)]
rng = np.random.default_rng(0)
n_genes = len(genes)
def cell(cols, counts):
    rows = np.zeros(len(cols), int)
    return sp.csr_matrix((np.asarray(counts, np.float32), (rows, np.asarray(cols))), shape=(1, n_genes))
tied = np.arange(base.n_vars, base.n_vars + 300)  # synthetic genes whose medians the test made equal
edge = [
    cell([5], [3]),                                                       # one gene
    cell(np.sort(rng.choice(n_genes, 4300, replace=False)), rng.integers(1, 9, 4300)),  # > input size
    cell(tied, np.ones(300)),                                              # 300-way tie
    cell(np.concatenate([tied, [1, 2, 3]]), np.r_[np.full(300, 2), [5, 5, 1]]),  # ties + others
]
x = sp.vstack([sp.hstack([base.X, sp.csr_matrix((base.n_obs, len(extra)))]), *edge])
names = list(base.var_names) + extra
data = ad.AnnData(X=sp.csr_matrix(x, dtype=np.float32))
data.var_names = names

variants = {"plain": data}
dup = data.copy()  # a duplicated gene column: helical sums duplicates (its collapse path)
dup = ad.concat([dup, ad.AnnData(X=dup.X[:, [7]], obs=dup.obs, var=pd.DataFrame(index=[names[7]]))], axis=1)
dup.var_names = names + [names[7]]
variants["duplicate_gene"] = dup
obs = data.copy()
obs.obs["n_counts"] = np.asarray(obs.X.sum(axis=1)).ravel() * 2.0
obs.obs["filter_pass"] = (np.arange(obs.n_obs) % 3 != 0).astype(int)
variants["obs_instructions"] = obs

prefix = helical_prefix()
report = {}
for name in sys.argv[4].split(","):
    trust_cached_files(registry.required_files(get_model(name), {}), prefix)
    gf = Geneformer(GeneformerConfig(model_name=name))
    for label, adata in variants.items():
        ref = Ragged.from_dataset(gf.process_data(adata.copy(), gene_names="index"))
        fast = geneformer_tokens(gf, adata.copy(), gene_names="index")
        report[f"{name}/{label}"] = {
            "identical": bool(np.array_equal(ref.offsets, fast.offsets) and np.array_equal(ref.values, fast.values)),
            "cells": len(ref), "fast_cells": len(fast), "edge_lengths": ref.lengths[-4:].tolist(),
        }
json.dump(report, open(out, "w"), indent=1)
"""


def test_fast_tokens_are_helicals_token_for_token(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    build_fixture(cache, families=("geneformer",), n_synthetic_genes=N_SYNTHETIC, models=MODELS)
    # give 300 synthetic genes the same median so cells with equal counts on them tie
    for version in ("v1", "v2"):
        path = cache / ".cache/helical/models/geneformer" / version / "gene_median_dictionary.json"
        medians = json.loads(path.read_text())
        for ensembl_id in list(medians)[765 : 765 + 300]:  # gene_table order: sample genes, then synthetic
            medians[ensembl_id] = 1.5
        path.write_text(json.dumps(medians))
    out = tmp_path / "report.json"
    env = {**os.environ, "CACHE_DIR_HELICAL_PREFIX": str(cache), "TQDM_DISABLE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(SAMPLE), str(out), str(N_SYNTHETIC), ",".join(MODELS)],
        env=env, capture_output=True, text=True, timeout=900, check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(out.read_text())
    assert len(report) == 6
    for case, rec in report.items():
        assert rec["identical"], case
        assert rec["fast_cells"] == rec["cells"], case
    # (np.argsort's default sort is not stable: a stable sort orders these ties differently)
    # the edge cells are what they claim: 1 gene, truncated to the input size, 300- and 303-token ties
    assert report["gf-6L-10M-i2048/plain"]["edge_lengths"] == [1, 2048, 300, 303]
    assert report["gf-12L-38M-i4096/plain"]["edge_lengths"] == [3, 4096, 302, 305]
    assert report["gf-6L-10M-i2048/obs_instructions"]["cells"] < 154  # filter_pass dropped cells
