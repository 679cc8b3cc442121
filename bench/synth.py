"""Synthetic `.h5ad` files of any size, written chunk by chunk (never the whole matrix in memory).

    python bench/synth.py OUT.h5ad --cells 200000 [--genes-file src/helical_airflow/models/fixture_genes.txt]
    python bench/synth.py OUT.h5ad --cells 1000000 --draw sparse --genes-per-cell 50   # a million cells, ~20 s

`--draw dense` (the default, what bench/memory.py measured with) draws every gene of every cell and keeps each
with probability genes_per_cell / genes; `--draw sparse` draws only the kept genes (CSR only), so its cost
grows with the non-zeros rather than cells x genes, and gives each `cell_type` a block of genes it expresses
more often, so the labels are learnable (the quality gate's kNN and silhouette then mean something).

From Python (other benchmarks): `from synth import write_synthetic_h5ad` with bench/ on sys.path.
Counts are small random integers on a random subset of genes per cell, the layout is anndata's own
(X as CSR or dense, obs with a categorical `cell_type`, var indexed by gene name), so every reader
in the project treats it like a real file.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd

FIXTURE_GENES = Path(__file__).resolve().parents[1] / "src/helical_airflow/models/fixture_genes.txt"
CHUNK_ELEMENTS = 1 << 22  # dense random draws per chunk: bounds this writer's memory (~64 MB)
CELL_TYPES = ["T cell", "B cell", "NK cell", "Monocyte", "Dendritic cell"]


def fixture_genes() -> list[str]:
    return FIXTURE_GENES.read_text().split()


def write_synthetic_h5ad(
    path: str | Path,
    n_cells: int,
    genes: int | Sequence[str],
    genes_per_cell: int = 200,
    format: str = "csr",
    seed: int = 0,
    draw: str = "dense",
) -> Path:
    """Write `n_cells` x genes integer counts to `path`; `genes` is a count or a list of gene names."""
    if format not in ("csr", "dense"):
        raise ValueError(f"format must be 'csr' or 'dense', not {format!r}")
    if draw not in ("dense", "sparse") or (draw == "sparse" and format != "csr"):
        raise ValueError(f"draw must be 'dense' or 'sparse' (sparse: CSR only), not {draw!r} with {format!r}")
    names = [f"GENE{i}" for i in range(genes)] if isinstance(genes, int) else list(genes)
    n_genes = len(names)
    path = Path(path)
    rng = np.random.default_rng(seed)
    types = rng.integers(0, len(CELL_TYPES), size=n_cells)
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical.from_codes(types, categories=CELL_TYPES)},
        index=[f"cell_{i}" for i in range(n_cells)],
    )
    var = pd.DataFrame(index=pd.Index(names))
    # anndata writes obs, var and the empty groups; X is added below, one chunk of rows at a time
    ad.AnnData(obs=obs, var=var).write_h5ad(path)
    rows_per_chunk = max(1, CHUNK_ELEMENTS // max(1, n_genes))
    fill = min(1.0, genes_per_cell / max(1, n_genes))
    with h5py.File(path, "a") as h5:
        if format == "dense":
            chunks = (min(n_cells, 256), n_genes) if n_cells and n_genes else None
            x = h5.create_dataset("X", shape=(n_cells, n_genes), dtype="int32", chunks=chunks)
            x.attrs.update({"encoding-type": "array", "encoding-version": "0.2.0"})
            for lo in range(0, n_cells, rows_per_chunk):
                x[lo : lo + rows_per_chunk] = _counts(rng, min(rows_per_chunk, n_cells - lo), n_genes, fill)
            return path
        group = h5.create_group("X")
        group.attrs.update({"encoding-type": "csr_matrix", "encoding-version": "0.1.0", "shape": (n_cells, n_genes)})
        data = group.create_dataset("data", shape=(0,), maxshape=(None,), dtype="int32", chunks=(1 << 16,))
        indices = group.create_dataset("indices", shape=(0,), maxshape=(None,), dtype="int32", chunks=(1 << 16,))
        indptr = group.create_dataset("indptr", shape=(n_cells + 1,), dtype="int64")
        indptr[0] = 0
        nnz = 0
        if draw == "sparse":
            rows_per_chunk = max(1, CHUNK_ELEMENTS // max(1, genes_per_cell))
            for lo in range(0, n_cells, rows_per_chunk):
                cols, counts, per_row = _sparse_counts(rng, types[lo : lo + rows_per_chunk], n_genes, genes_per_cell)
                data.resize((nnz + cols.size,))
                indices.resize((nnz + cols.size,))
                data[nnz:] = counts
                indices[nnz:] = cols
                indptr[lo + 1 : lo + 1 + per_row.size] = nnz + np.cumsum(per_row)
                nnz += cols.size
            return path
        for lo in range(0, n_cells, rows_per_chunk):
            block = _counts(rng, min(rows_per_chunk, n_cells - lo), n_genes, fill)
            rows, cols = np.nonzero(block)
            data.resize((nnz + rows.size,))
            indices.resize((nnz + rows.size,))
            data[nnz:] = block[rows, cols]
            indices[nnz:] = cols
            indptr[lo + 1 : lo + 1 + block.shape[0]] = nnz + np.cumsum(np.bincount(rows, minlength=block.shape[0]))
            nnz += rows.size
    return path


def _counts(rng: np.random.Generator, n_rows: int, n_genes: int, fill: float) -> np.ndarray:
    """Dense int32 block: each gene present with probability `fill`, counts 1 + Poisson(2)."""
    present = rng.random((n_rows, n_genes)) < fill
    if n_genes:
        present[np.arange(n_rows), rng.integers(0, n_genes, size=n_rows)] = True  # no empty cells
    counts = (1 + rng.poisson(2.0, size=(n_rows, n_genes))).astype(np.int32)
    return np.where(present, counts, 0).astype(np.int32)


def _sparse_counts(
    rng: np.random.Generator, types: np.ndarray, n_genes: int, genes_per_cell: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row by row (flat, CSR order; and the count per row): sorted distinct gene columns (about `genes_per_cell`:
    draws with replacement, duplicates dropped) and their counts 1 + Poisson(2). Half the draws fall in the row's
    cell type's own block of genes."""
    n_rows, k = len(types), max(1, min(genes_per_cell, n_genes))
    block = max(1, n_genes // len(CELL_TYPES))
    draws = rng.integers(0, n_genes, size=(n_rows, k))
    own = rng.random((n_rows, k)) < 0.5
    draws = np.where(own, (types[:, None] * block + draws % block) % n_genes, draws)
    draws.sort(axis=1)
    keep = np.ones_like(draws, dtype=bool)
    keep[:, 1:] = draws[:, 1:] != draws[:, :-1]
    counts = (1 + rng.poisson(2.0, size=draws.shape)).astype(np.int32)
    return draws[keep].astype(np.int32), counts[keep], keep.sum(axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--cells", type=int, required=True)
    parser.add_argument("--genes-file", type=Path, default=FIXTURE_GENES, help="one gene name per line")
    parser.add_argument("--genes-per-cell", type=int, default=200)
    parser.add_argument("--format", choices=["csr", "dense"], default="csr")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--draw", choices=["dense", "sparse"], default="dense")
    args = parser.parse_args()
    genes = args.genes_file.read_text().split()
    write_synthetic_h5ad(args.out, args.cells, genes, args.genes_per_cell, args.format, args.seed, args.draw)
    print(args.out)


if __name__ == "__main__":
    main()
