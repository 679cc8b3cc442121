"""Build data/sample.h5ad: real PBMC counts with real human gene symbols, small enough to commit.

Provenance: scanpy ships `10x_pbmc68k_reduced.h5ad` inside its wheel (700 cells x 765 genes from
the 10x Genomics "Fresh 68k PBMCs" data set, Zheng et al. 2017, Nat. Commun. 8:14049). Its `.raw`
holds log1p(counts / n_counts * 1e4); we invert that with the stored per-cell `n_counts` and round
to recover raw integer UMI counts, which is what Helical models expect. The cell-type column is
scanpy's `bulk_labels`, copied to `obs["cell_type"]`.

Run: python scripts/make_sample.py [--out data/sample.h5ad]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scanpy
import scipy.sparse as sp


def build() -> ad.AnnData:
    src = Path(scanpy.__file__).parent / "datasets" / "10x_pbmc68k_reduced.h5ad"
    full = ad.read_h5ad(src)
    lognorm = full.raw.X
    lognorm = lognorm.toarray() if sp.issparse(lognorm) else np.asarray(lognorm)
    size_factors = full.obs["n_counts"].to_numpy()[:, None] / 1e4
    counts = np.rint(np.expm1(lognorm) * size_factors).astype(np.int32)
    obs = pd.DataFrame(
        {
            "cell_type": full.obs["bulk_labels"].astype(str).astype("category"),
            "n_counts_source": full.obs["n_counts"].astype(np.float32),
        },
        index=full.obs_names.astype(str),
    )
    var = pd.DataFrame({"gene_symbol": full.raw.var_names.astype(str)}, index=full.raw.var_names.astype(str))
    sample = ad.AnnData(X=sp.csr_matrix(counts), obs=obs, var=var)
    sample.uns["provenance"] = (
        "10x Genomics Fresh 68k PBMCs (Zheng et al. 2017), 700-cell subset shipped with scanpy as "
        "10x_pbmc68k_reduced.h5ad; raw counts recovered by scripts/make_sample.py"
    )
    return sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("data/sample.h5ad"))
    args = parser.parse_args()
    sample = build()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sample.write_h5ad(args.out, compression="gzip")
    genes_file = Path("src/helical_airflow/models/fixture_genes.txt")
    genes_file.write_text("\n".join(sample.var_names) + "\n")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB): {sample.n_obs} cells x {sample.n_vars} genes")
    print(f"wrote {genes_file} ({sample.n_vars} gene symbols for the fixture vocabulary)")


if __name__ == "__main__":
    main()
