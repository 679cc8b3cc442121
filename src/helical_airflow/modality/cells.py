"""Cells: single-cell RNA counts in `.h5ad` (cells in obs, genes in var, counts in X or a named layer).

Validation is inputcheck.validate_h5ad (bounded HDF5 inspection, then the genes against the model's vocabulary);
a shard is a row range read straight from the file (h5io.read_shard); the quality gate's baseline is a PCA of the
same cells' counts (scores.baseline_pca), and the report's input QC is counts and genes per cell.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import figures, h5io, inputcheck, scores
from ..models import registry
from ..models.profiles import ModelSpec
from ..spec import InputSummary, Plan, ShardResult
from .base import Baseline, Extra, QCSection

SUFFIXES = (".h5ad",)


class Cells:
    name: str = "cells"
    unit: str = "cells"
    suffixes: tuple[str, ...] = SUFFIXES
    label_fix: str = "pass an obs column of categories, or omit it"
    umap: bool = True
    no_umap_note: str = ""
    metrics: tuple[str, ...] = ()

    def accepts(self, path: str | Path) -> bool:
        return str(path).lower().endswith(self.suffixes)

    def dataset_name(self, path: str | Path) -> str:
        return Path(path).name.removesuffix(".h5ad")

    def validate(
        self, path: str, spec: ModelSpec, options: Mapping[str, str], layer: str | None, cache_dir: str | None,
        data_root: Path | None,
    ) -> InputSummary:  # fmt: skip
        return inputcheck.validate_h5ad(
            path, spec.name, lambda: registry.gene_vocabulary(spec, options, cache_dir), layer, data_root
        )

    def describe(self, summary: InputSummary) -> str:
        return (f"{summary.path}: {summary.n_cells} cells x {summary.n_genes} genes, "
                f"{100 * summary.vocab_overlap:.0f}% of genes in the model's vocabulary")  # fmt: skip

    def read_shard(self, summary: InputSummary, start: int, stop: int, layer: str | None) -> Any:
        return h5io.read_shard(summary.path, start, stop, layer)

    def take(self, rows: Any, positions: np.ndarray) -> Any:
        return rows[positions].copy()

    def metadata(self, summary: InputSummary) -> pd.DataFrame:
        return h5io.read_obs(summary.path)

    def label_table(self, path: str | Path) -> pd.DataFrame | None:
        """The columns a label is checked against (before anything is embedded: the file is not validated yet; and
        by the quality gate): without the cell names, which a label does not need (a million Python strings)."""
        return h5io.read_obs(path, names=False)

    def label_columns(self, table: pd.DataFrame) -> pd.DataFrame:
        return table

    def merge_extras(self, table: pd.DataFrame, embeddings: Callable[[], np.ndarray]) -> dict[str, Extra]:
        return {}

    def baseline(self, plan: Plan, rows: np.ndarray) -> Baseline:
        """The sampled cells' counts for the PCA baseline, and counts and genes per cell (qc.npy, for the report: it
        runs as a DAG task of its own), in one streaming pass over the counts."""
        stats = scores.input_stats(plan.input.path, plan.params.layer, rows)
        qc = np.vstack([stats.counts_per_cell, stats.genes_per_cell.astype(np.float64)])
        return Baseline(lambda: scores.baseline_pca(stats.sample_counts, plan.params.seed), scores.BASELINE, qc)

    def qc_section(self, plan: Plan, qc: np.ndarray | None) -> QCSection:
        if qc is None:  # the gate writes qc.npy; a report made without it reads the counts once
            stats = scores.input_stats(plan.input.path, plan.params.layer, np.arange(0))
            counts, genes = stats.counts_per_cell, stats.genes_per_cell
        else:
            counts, genes = qc[0], qc[1].astype(np.int64)
        return QCSection(qc_table(plan, counts, genes), qc_picture(counts, genes), "counts and genes per cell")

    def shard_metrics(self, summary: InputSummary, result: ShardResult) -> list[tuple[str, float, str]]:
        return []


def qc_picture(counts: np.ndarray, genes: np.ndarray) -> str:
    plt = figures.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), dpi=90)
    for ax, values, what in ((axes[0], counts, "counts per cell"), (axes[1], genes, "genes detected per cell")):
        positive = values[values > 0]
        if len(positive):
            bins = np.geomspace(max(1.0, positive.min()), max(2.0, positive.max()), 50)
            ax.hist(positive, bins=bins, color="#4c72b0")
            ax.set_xscale("log")
            ax.axvline(float(np.median(values)), color="#c44e52", lw=1.5, label=f"median {np.median(values):,.0f}")
            ax.legend(fontsize=8, frameon=False)
        ax.set_xlabel(what)
        ax.set_ylabel("cells")
    fig.tight_layout()
    return figures.png(fig)


def qc_table(plan: Plan, counts: np.ndarray, genes: np.ndarray) -> str:
    def summary(values: np.ndarray) -> str:
        p5, med, p95 = np.percentile(values, [5, 50, 95])
        return f"median {med:,.0f} (5%: {p5:,.0f}, 95%: {p95:,.0f}; min {values.min():,.0f}, max {values.max():,.0f})"

    inp = plan.input
    return figures.table(
        [
            ("cells x genes", f"{inp.n_cells:,} x {inp.n_genes:,} ({inp.x_source}, {inp.x_format}, {inp.dtype})"),
            ("counts per cell", summary(counts)),
            ("genes detected per cell", summary(genes)),
            ("cells with no counts", int((counts == 0).sum())),
            (
                "genes in the model's vocabulary",
                f"{inp.genes_in_vocab:,} of {inp.n_genes:,} ({inp.vocab_overlap:.1%}), gene ids: {inp.gene_id_kind}",
            ),
        ]  # fmt: skip
    )


CELLS = Cells()
