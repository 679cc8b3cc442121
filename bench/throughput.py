"""Cells/s of helical's own Geneformer `get_embeddings` vs the fast path, in one process, same data.

Random weights of the real architecture (the offline fixture builder, shape "real") and a synthetic
dataset shaped like 10x data: a 25,000-gene vocabulary and log-normal detected genes per cell around
1,800. Both paths embed the same tokenised dataset with the same loaded model; the fast path is
also checked against helical's output (per-cell cosine). Prints each path's cells/s, their ratio and,
on GPU, the card and the achieved model TFLOP/s (encoder matmuls + attention, the FLOPs both paths
must do; helical's unused vocabulary head is not counted).

    python bench/throughput.py                      # CPU, gf-6L-10M-i2048, a few minutes on 2 cores
    python bench/throughput.py --device cuda        # GPU, gf-12L-104M-i4096
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from helical_airflow.spec import Precision

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))  # runs from a checkout without installing it (the GPU machine)

DEFAULTS = {  # device -> (model, cells, repeats)
    "cpu": ("gf-6L-10M-i2048", 96, 3),
    "cuda": ("gf-12L-104M-i4096", 3072, 1),
}

#: the issue's targets: (device, model) -> minimum fast / helical ratio
TARGETS = {("cpu", "gf-6L-10M-i2048"): 3.0, ("cuda", "gf-12L-104M-i4096"): 4.0}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--model", help="Geneformer model name (default: gf-6L-10M-i2048 on CPU, gf-12L-104M-i4096 on GPU)")
    p.add_argument("--cells", type=int, help="cells in the synthetic dataset (default: 96 on CPU, 3072 on GPU)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed runs of each path, interleaved; each path's best run counts, so a burst of load "
                        "from other jobs does not decide the ratio (default: 3 on CPU, 1 on GPU)")
    p.add_argument("--genes", type=int, default=25_000, help="gene vocabulary size")
    p.add_argument("--mean-genes", type=float, default=1_800, help="median detected genes per cell (log-normal)")
    p.add_argument("--batch-size", type=int, default=24, help="helical's batch size (its default)")
    p.add_argument("--precision", choices=["fp16", "bf16", "fp32"], default=None,
                   help="both paths on GPU (default fp16: helical's own autocast); CPU is always fp32")
    p.add_argument("--kernels", default=None,
                   help="fast-path kernels to time, comma-separated (default: packed on CPU, packed,padded on GPU)")
    p.add_argument("--token-budget", default=None,
                   help="fast path tokens per batch, comma-separated to compare several (default per device)")
    p.add_argument("--cache-dir", default=None, help="fixture cache folder (default: a folder under the temp dir)")
    p.add_argument("--json", default=None, help="also write the results to this file")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def synthetic_counts(n_cells: int, genes: list[str], mean_genes: float, seed: int) -> Any:
    """Integer counts (CSR) with log-normal detected genes per cell, geometric counts per gene."""
    import anndata as ad
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    n_genes = len(genes)
    detected = np.exp(rng.normal(math.log(mean_genes), 0.5, n_cells)).clip(200, min(6_000, n_genes)).astype(int)
    indptr = np.zeros(n_cells + 1, dtype=np.int64)
    np.cumsum(detected, out=indptr[1:])
    indices = np.concatenate([np.sort(rng.choice(n_genes, k, replace=False)) for k in detected])
    counts = rng.geometric(0.35, indptr[-1]).astype(np.float32)
    adata = ad.AnnData(X=sp.csr_matrix((counts, indices, indptr), shape=(n_cells, n_genes)))
    adata.var_names = genes
    adata.obs_names = [f"cell{i}" for i in range(n_cells)]
    return adata


def model_flops(config: Any, lengths: np.ndarray) -> float:
    """Encoder FLOPs for cells of these token lengths: dense matmuls per token + attention per cell."""
    d, layers, f = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    per_token = layers * (2 * 4 * d * d + 2 * 2 * d * f)
    attention = layers * 2 * 2 * d * (lengths.astype(np.float64) ** 2)
    return float(per_token * lengths.sum() + attention.sum())


def timed(fn: Any, device: str) -> tuple[Any, float]:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def main() -> int:
    args = parse_args()
    model_name = args.model or DEFAULTS[args.device][0]
    n_cells = args.cells or DEFAULTS[args.device][1]
    repeats = max(1, args.repeats or DEFAULTS[args.device][2])
    precision: Precision = "fp32" if args.device == "cpu" else (args.precision or "fp16")
    kernels = (args.kernels or ("packed" if args.device == "cpu" else "packed,padded")).split(",")
    budgets = [int(b) for b in args.token_budget.split(",")] if args.token_budget else [None]
    cache_dir = Path(args.cache_dir or Path(tempfile.gettempdir()) / "helical-airflow-bench" / "fixture")

    # helical reads its cache location once, at import: set it before anything imports helical
    os.environ["CACHE_DIR_HELICAL_PREFIX"] = str(cache_dir)
    os.environ.setdefault("TQDM_DISABLE", "1")
    warnings.filterwarnings("ignore")

    from helical_airflow.models import get_model, registry
    from helical_airflow.models.fixture import build_fixture
    from helical_airflow.models.runner import precision_scope, trust_cached_files

    t0 = time.perf_counter()
    info = build_fixture(cache_dir, families=["geneformer"], genes=[], n_synthetic_genes=args.genes,
                         shape="real", seed=args.seed, models=[model_name])
    fixture_s = time.perf_counter() - t0
    token_file = registry.required_files(get_model(model_name), {})[1]
    genes = sorted(json.loads((cache_dir / ".cache/helical/models" / token_file)
                              .read_text()))
    genes = [g for g in genes if not g.startswith("<")]

    import datasets.config
    import torch
    from helical.models.geneformer import Geneformer, GeneformerConfig

    # datasets 3.6 (helical's) imports torchvision.io.VideoReader when formatting torch tensors if
    # torchvision is loaded; torchvision 0.26 (GPU images) removed it. Tokenised cells hold no video.
    datasets.config.TORCHVISION_AVAILABLE = False

    from helical_airflow.models.geneformer.fast import Ragged, geneformer_embeddings
    from helical_airflow.models.geneformer.tokenize_fast import geneformer_tokens

    logging.disable(logging.WARNING)  # helical logs every batch and every file check
    torch.manual_seed(args.seed)
    trust_cached_files(registry.required_files(get_model(model_name), {}), str(cache_dir))
    gf = Geneformer(GeneformerConfig(model_name=model_name, batch_size=args.batch_size, device=args.device))
    adata = synthetic_counts(n_cells, genes, args.mean_genes, args.seed)
    dataset, tokenise_s = timed(lambda: gf.process_data(adata.copy(), gene_names="index"), "cpu")
    helical_tokens = Ragged.from_dataset(dataset)
    lengths = helical_tokens.lengths
    fast_tokens, fast_tokenise_s = timed(lambda: geneformer_tokens(gf, adata.copy(), gene_names="index"), "cpu")
    same_tokens = bool(np.array_equal(fast_tokens.offsets, helical_tokens.offsets)
                       and np.array_equal(fast_tokens.values, helical_tokens.values))
    flops = model_flops(gf.model.config, lengths)

    def run_helical(ds: Any) -> np.ndarray:
        with precision_scope(args.device, precision):  # sets the dtype helical's autocast("cuda") takes
            return np.asarray(gf.get_embeddings(ds))

    def run_fast(ds: Any, kernel: str, budget: int | None = None) -> np.ndarray:
        return geneformer_embeddings(gf, ds, precision=precision, kernel=kernel,  # type: ignore[arg-type]
                                     token_budget=budget)

    # warm up (kernel selection, cuBLAS handles, allocator) on a few cells, untimed
    warm = dataset.select(range(min(2 * args.batch_size, n_cells)))
    run_helical(warm)
    failed: dict[str, str] = {}
    for kernel in list(kernels):
        try:
            run_fast(warm, kernel)
        except Exception as err:  # one kernel failing (e.g. on another torch) must not hide the others
            failed[kernel] = f"{type(err).__name__}: {err}"
            kernels.remove(kernel)

    # helical and every fast configuration take turns, `repeats` rounds; each keeps its best time. The fast
    # configurations run in reverse order every other round: the one right after helical's run was slower
    configs = [(kernel, budget) for kernel in kernels for budget in budgets]
    helical_times: list[float] = []
    fast_times: dict[tuple[str, int | None], list[float]] = {c: [] for c in configs}
    fast_out: dict[tuple[str, int | None], np.ndarray] = {}
    for round_ in range(repeats):
        reference, seconds = timed(lambda: run_helical(dataset), args.device)
        helical_times.append(seconds)
        for kernel, budget in configs if round_ % 2 == 0 else configs[::-1]:
            fast_out[(kernel, budget)], seconds = timed(lambda k=kernel, b=budget: run_fast(dataset, k, b), args.device)
            fast_times[(kernel, budget)].append(seconds)
    helical_s = min(helical_times)
    rows: list[dict[str, Any]] = [
        {"path": "helical get_embeddings", "seconds": helical_s, "all_seconds": helical_times}
    ]
    for (kernel, budget), emb in fast_out.items():
        cos = (emb * reference).sum(1) / np.linalg.norm(emb, axis=1) / np.linalg.norm(reference, axis=1)
        label = f"fast ({kernel}{f', {budget} tok' if budget else ''})"
        rows.append({"path": label, "kernel": kernel, "token_budget": budget,
                     "seconds": min(fast_times[(kernel, budget)]), "all_seconds": fast_times[(kernel, budget)],
                     "min_cosine_vs_helical": float(cos.min())})
    for row in rows:
        row["cells_per_s"] = n_cells / row["seconds"]
        row["ratio_vs_helical"] = helical_s / row["seconds"]
        row["tflops"] = flops / row["seconds"] / 1e12

    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else (platform.processor() or "cpu")
    result = {
        "model": model_name, "device": args.device, "device_name": device_name, "precision": precision,
        "cells": n_cells, "genes": args.genes, "mean_tokens": float(lengths.mean()),
        "max_tokens": int(lengths.max()), "helical_batch_size": args.batch_size,
        "torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "fixture_parameters": info["models"][model_name]["parameters"], "fixture_build_s": round(fixture_s, 1),
        "tokenise_cells_per_s": n_cells / tokenise_s, "fast_tokenise_cells_per_s": n_cells / fast_tokenise_s,
        "fast_tokens_identical": same_tokens, "repeats": repeats, "rows": rows, "failed_kernels": failed,
        "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else None,
    }
    print(f"\n{model_name} (random weights, {result['fixture_parameters'] / 1e6:.1f}M parameters) on "
          f"{device_name} [{args.device}, {precision}, torch {torch.__version__}, {result['threads']} threads]")
    print(f"{n_cells} cells, {args.genes} genes, mean {lengths.mean():.0f} tokens/cell (max {lengths.max()}); "
          f"tokenisation: helical {result['tokenise_cells_per_s']:.0f} cells/s, fast "
          f"{result['fast_tokenise_cells_per_s']:.0f} cells/s (identical tokens: {same_tokens})")
    print(f"best of {repeats} interleaved run(s) per path")
    print(f"{'path':<32}{'seconds':>9}{'cells/s':>10}{'ratio':>8}{'TFLOP/s':>9}  min cos vs helical")
    for row in rows:
        cos_text = f"{row['min_cosine_vs_helical']:.6f}" if "min_cosine_vs_helical" in row else "-"
        print(f"{row['path']:<32}{row['seconds']:>9.2f}{row['cells_per_s']:>10.2f}{row['ratio_vs_helical']:>7.2f}x"
              f"{row['tflops']:>9.2f}  {cos_text}")
    for kernel, error in failed.items():
        print(f"fast ({kernel}) FAILED: {error}")
    target = TARGETS.get((args.device, model_name))
    if target is not None and len(rows) > 1:
        best = max(row["ratio_vs_helical"] for row in rows[1:])
        result["target"] = {"ratio": target, "best": best, "met": best >= target}
        print(f"target: fast >= {target:.0f}x helical for {model_name} on {args.device}: {best:.2f}x, "
              f"{'MET' if best >= target else 'NOT MET'}")
    print("RESULT " + json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
