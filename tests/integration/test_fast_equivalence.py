"""The fast path returns helical's own embeddings: per-cell cosine >= 0.9999 against real helical
`get_embeddings` on CPU in fp32, on the offline fixture models and data/sample.h5ad, plus edge cells
(one expressed gene; more genes than the model's input size, which helical's tokenizer truncates).

helical reads CACHE_DIR_HELICAL_PREFIX once, at import, so helical runs in a child process pointed at
the fixture cache; this test process never imports helical.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from helical_airflow.models.fixture import build_fixture

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample.h5ad"
N_SYNTHETIC = 5_000  # enough fixture genes for a cell longer than a 4,096-token model
MIN_COSINE = 0.9999

# argv: sample, n sample cells, which cases (comma-separated), out json
CHILD = r"""
import json, sys, warnings, logging
warnings.filterwarnings("ignore")
import numpy as np, anndata as ad, scipy.sparse as sp
from helical_airflow.models import get_model, registry
from helical_airflow.models.fixture_io import gene_table, default_genes
from helical_airflow.models.runner import helical_prefix, trust_cached_files

sample, n, cases, out = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(","), sys.argv[4]
logging.disable(logging.WARNING)
base = ad.read_h5ad(sample)[:n]
genes = [s for e, s in gene_table(default_genes(), int(sys.argv[5]))]
extra = [g for g in genes if g not in set(base.var_names)]
rng = np.random.default_rng(0)
def cell(k):  # k expressed genes, random counts
    cols = np.sort(rng.choice(len(genes), k, replace=False))
    return sp.csr_matrix((rng.integers(1, 30, k).astype(np.float32), (np.zeros(k, int), cols)), shape=(1, len(genes)))
x = sp.vstack([sp.hstack([base.X, sp.csr_matrix((base.n_obs, len(extra)))]), cell(1), cell(2500), cell(4200)])
data = ad.AnnData(X=sp.csr_matrix(x, dtype=np.float32))
data.var_names = list(base.var_names) + extra
prefix = helical_prefix()

def cosines(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)

report = {}
for case in cases:
    family, model_name, mode, layer, kernel = case.split(":")
    trust_cached_files(registry.required_files(get_model(model_name), {}), prefix)
    if family == "geneformer":
        from helical.models.geneformer import Geneformer, GeneformerConfig
        from helical_airflow.models.geneformer.fast import geneformer_embeddings
        model = Geneformer(GeneformerConfig(model_name=model_name, batch_size=24, emb_mode=mode, emb_layer=int(layer)))
        dataset = model.process_data(data.copy())
        fast = geneformer_embeddings(model, dataset, kernel=kernel, token_budget=6000)
        lengths = list(dataset["length"])
    elif family == "scgpt":
        from pathlib import Path
        from helical.models.scgpt import scGPT, scGPTConfig
        from helical_airflow.models.scgpt.adapter import architecture
        from helical_airflow.models.scgpt.fast import scgpt_embeddings
        arch = architecture(Path(prefix, ".cache/helical/models/scgpt/scGPT_CP"))
        model = scGPT(scGPTConfig(batch_size=24, emb_mode=mode, **arch))
        dataset = model.process_data(data.copy())
        fast = scgpt_embeddings(model, dataset, token_budget=3000)
        lengths = [int(dataset[i]["genes"].shape[0]) for i in range(len(dataset))]
    else:  # the runner with engine="fast" vs engine="helical" (what the CLI and the DAG call)
        spec = get_model(model_name)
        def make(engine):
            return registry.load_runner(spec, device="cpu", precision="fp32", batch_size=24, engine=engine, seed=0,
                                        options={})  # fmt: skip

        fast = make("fast").embed(data)
        model = make("helical")
        ref = model.embed(data)
        report[case] = {"shape": list(fast.shape), "helical_shape": list(ref.shape),
                        "min_cos": float(cosines(fast, ref).min()), "finite": bool(np.isfinite(fast).all()),
                        "n_cells": data.n_obs}
        continue
    ref = model.get_embeddings(dataset)
    report[case] = {
        "shape": list(np.shape(fast)), "helical_shape": list(np.shape(ref)),
        "min_cos": float(cosines(fast, ref).min()), "finite": bool(np.isfinite(fast).all()),
        "n_cells": data.n_obs, "edge_lengths": lengths[-3:],
    }
json.dump(report, open(out, "w"), indent=1)
"""


def run_child(cache: Path, n: int, cases: list[str], tmp: Path) -> dict[str, Any]:
    env = {**os.environ, "CACHE_DIR_HELICAL_PREFIX": str(cache), "TQDM_DISABLE": "1"}
    out = tmp / "report.json"
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(SAMPLE), str(n), ",".join(cases), str(out), str(N_SYNTHETIC)],
        env=env, capture_output=True, text=True, timeout=1500, check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def check(report: dict[str, Any], cases: list[str]) -> None:
    assert sorted(report) == sorted(cases)
    for case, rec in report.items():
        assert rec["shape"] == rec["helical_shape"], case
        assert rec["shape"][0] == rec["n_cells"], case
        assert rec["finite"], case
        assert rec["min_cos"] >= MIN_COSINE, (case, rec["min_cos"])


def test_fast_geneformer_equals_helical_quick(tmp_path: Path) -> None:
    """v2 tokens (<cls> ... <eos>), both kernels, a 1-gene cell and cells truncated at 4,096 tokens."""
    cache = tmp_path / "cache"
    build_fixture(
        cache, families=("geneformer",), n_synthetic_genes=N_SYNTHETIC, models=["gf-12L-38M-i4096"]
    )
    cases = ["geneformer:gf-12L-38M-i4096:cell:-1:padded", "geneformer:gf-12L-38M-i4096:cell:-1:packed"]
    report = run_child(cache, 20, cases, tmp_path)
    check(report, cases)
    # the edge cells really are edge cases: 1 gene + <cls>/<eos>, and two cells cut to the input size
    assert report[cases[0]]["edge_lengths"] == [3, 2502, 4096]


@pytest.mark.slow
def test_fast_paths_equal_helical_on_sample_cells(tmp_path: Path) -> None:
    """Every mode with a fast path, both Geneformer vocabularies (v1 no <cls>, v2 <cls>/<eos>), scGPT's
    cls and (quirky, padding-averaging) cell modes, a non-final layer, and the runners' engine switch.

    300 of the sample's 700 cells plus the 3 edge cells: the whole sample took 169 s in CI (the slowest test); the
    cases, kernels and edge lengths are the same, and the batching itself is tested in
    tests/unit/test_fast_batching.py. The runner case embedded helical's reference twice, now once."""
    cache = tmp_path / "cache"
    build_fixture(cache, n_synthetic_genes=N_SYNTHETIC, models=["gf-6L-10M-i2048", "gf-12L-38M-i4096"])
    cases = [
        "geneformer:gf-6L-10M-i2048:cell:-1:padded",
        "geneformer:gf-6L-10M-i2048:cell:-1:packed",
        "geneformer:gf-6L-10M-i2048:cell:0:packed",
        "geneformer:gf-12L-38M-i4096:cell:1:padded",
        "geneformer:gf-12L-38M-i4096:cls:-1:padded",
        "geneformer:gf-12L-38M-i4096:cls:-1:packed",
        "scgpt:scgpt:cls:-1:padded",
        "scgpt:scgpt:cell:-1:padded",
        "runner:gf-12L-38M-i4096:cell:-1:auto",
        "runner:scgpt:cls:-1:auto",
    ]
    report = run_child(cache, 300, cases, tmp_path)
    check(report, cases)
    assert report["geneformer:gf-6L-10M-i2048:cell:-1:padded"]["edge_lengths"] == [1, 2048, 2048]
