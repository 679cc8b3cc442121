"""Scores people can judge: the input's QC numbers, the label column, and how well embeddings separate it.

- `input_stats`: counts and genes per cell for every cell, read in bounded row blocks (a CSC file in bounded
  blocks of its non-zeros), plus the counts of a random sample of cells for the PCA baseline.
- `choose_label`: the obs column the scores (and the report's colours) use: the user's, else a guess.
- `label_scores`: kNN label-transfer accuracy and silhouette (scikit-learn), for the embeddings and for a PCA
  baseline of the same cells: the usual single-cell recipe (normalise each cell to 10,000 counts, log1p,
  the 2,000 most variable genes, 50 principal components).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from . import h5io
from .spec import LabelScores

MAX_SCORE_CELLS = 10_000  # cells the scores use (a random sample above this): kNN and PCA stay a few seconds
MAX_SILHOUETTE_CELLS = 5_000  # silhouette is O(n^2): sklearn's own sampling above this
ROW_BLOCK_ELEMENTS = h5io.BLOCK_ELEMENTS  # non-zeros read at once for the QC pass
KNN_NEIGHBOURS = 15
FOLDS = 5
MIN_CLASS_CELLS = FOLDS  # a label with fewer cells than folds cannot be held out in every fold
BASELINE_GENES = 2_000
BASELINE_COMPONENTS = 50
BASELINE = (
    f"PCA ({BASELINE_COMPONENTS} components) of the log1p counts per 10k of the {BASELINE_GENES} most variable "
    "genes, same cells"
)

# The label guess (`choose_label`). Candidates: obs columns with 2..50 categories (categorical, string or
# boolean; numbers only when they are categorical). A column named like an annotation (cell_type,
# bulk_labels, ...) beats any other; clusterings (louvain, leiden, ...) come last because they were computed
# from the same counts, so scoring against them is partly circular; technical columns (batch, donor,
# sample, phase, ...) are never guessed: separating them is what an embedding should NOT do.
MIN_CATEGORIES, MAX_CATEGORIES = 2, 50
ANNOTATION_NAME = re.compile(
    r"cell.?type|cell.?ontology|bulk.?labels?|annotation|cell.?labels?|^labels?$|^(major|minor)?.?celltypes?", re.I
)
CLUSTER_NAME = re.compile(r"louvain|leiden|cluster|kmeans|^seurat", re.I)
TECHNICAL_NAME = re.compile(
    r"batch|sample|donor|patient|individual|subject|library|plate|lane|well|phase|sex|gender|assay|chemistry|"
    r"replicate|protocol|tissue|organism|^_|barcode|^n_|_score$",
    re.I,
)


@dataclass
class InputStats:
    counts_per_cell: np.ndarray  # float64, every cell
    genes_per_cell: np.ndarray  # int32, every cell: genes with a non-zero count
    sample_rows: np.ndarray  # sorted row indices of the scoring sample
    sample_counts: sp.csr_matrix  # their counts (cells x genes)


def sample_rows(n_cells: int, seed: int, limit: int = MAX_SCORE_CELLS) -> np.ndarray:
    if n_cells <= limit:
        return np.arange(n_cells)
    return np.sort(np.random.default_rng(seed).choice(n_cells, limit, replace=False))


def input_stats(path: str | Path, layer: str | None, rows: np.ndarray) -> InputStats:
    """One streaming pass over the counts; memory: one block plus the sampled cells."""
    with h5io.open_counts(path, layer) as reader:
        n, n_genes = reader.n_cells, reader.n_genes
        if reader.format == "csc":
            return _csc_stats(reader, rows)
        totals = np.zeros(n, dtype=np.float64)
        genes = np.zeros(n, dtype=np.int32)
        picked: list[sp.csr_matrix] = []
        start = 0
        while start < n:
            stop = _block_stop(reader, start)
            block = reader.read_rows(start, stop)
            block.eliminate_zeros()
            totals[start:stop] = np.asarray(block.sum(axis=1)).ravel()
            genes[start:stop] = np.diff(block.indptr)
            lo, hi = np.searchsorted(rows, [start, stop])
            if hi > lo:
                picked.append(block[rows[lo:hi] - start])
            start = stop
        counts = sp.vstack(picked).tocsr() if picked else sp.csr_matrix((0, n_genes))
    return InputStats(totals, genes, rows, counts)


def _block_stop(reader: h5io.CountsReader, start: int) -> int:
    """The end of a row block holding about ROW_BLOCK_ELEMENTS stored values."""
    if reader.format == "dense":
        return min(reader.n_cells, start + max(1, ROW_BLOCK_ELEMENTS // max(1, reader.n_genes)))
    assert reader.indptr is not None
    stop = min(reader.n_cells, start + 1024)
    while stop < reader.n_cells:  # grow while the block stays under the bound (indptr reads are small)
        nnz = int(reader.indptr[min(reader.n_cells, stop * 2 - start)]) - int(reader.indptr[start])
        if nnz > ROW_BLOCK_ELEMENTS:
            break
        stop = min(reader.n_cells, stop * 2 - start)
    return stop


def _csc_stats(reader: h5io.CountsReader, rows: np.ndarray) -> InputStats:
    assert reader.indptr is not None and reader.indices is not None
    n = reader.n_cells
    col_ptr = reader.indptr[:].astype(np.int64)
    totals = np.zeros(n, dtype=np.float64)
    genes = np.zeros(n, dtype=np.int64)
    wanted = np.zeros(n, dtype=bool)
    wanted[rows] = True
    position = np.full(n, -1, dtype=np.int64)
    position[rows] = np.arange(len(rows))
    keep_r, keep_c, keep_v = [], [], []
    for lo in range(0, int(col_ptr[-1]), ROW_BLOCK_ELEMENTS):
        hi = min(lo + ROW_BLOCK_ELEMENTS, int(col_ptr[-1]))
        row_idx = reader.indices[lo:hi].astype(np.int64)
        values = np.asarray(reader.data[lo:hi], dtype=np.float64)
        nonzero = values != 0
        totals += np.bincount(row_idx, weights=values, minlength=n)
        genes += np.bincount(row_idx[nonzero], minlength=n)
        hit = np.flatnonzero(wanted[row_idx] & nonzero)
        if hit.size:
            keep_r.append(position[row_idx[hit]])
            keep_c.append(np.searchsorted(col_ptr, lo + hit, side="right") - 1)
            keep_v.append(values[hit])
    shape = (len(rows), reader.n_genes)
    if keep_r:
        coo = sp.coo_matrix((np.concatenate(keep_v), (np.concatenate(keep_r), np.concatenate(keep_c))), shape=shape)
        counts = coo.tocsr()
    else:
        counts = sp.csr_matrix(shape)
    return InputStats(totals, genes.astype(np.int32), rows, counts)


# ---- the label column -------------------------------------------------------------------------------------


def _categories(column: pd.Series) -> int | None:
    """Number of categories when the column is categorical-like, else None."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return int(column.dropna().nunique())
    if (
        pd.api.types.is_bool_dtype(column)
        or pd.api.types.is_object_dtype(column)
        or pd.api.types.is_string_dtype(column)
    ):
        return int(column.dropna().astype(str).nunique())
    return None  # numbers (counts, scores, integer ids) are not guessed as labels


def label_candidates(obs: pd.DataFrame) -> list[str]:
    """The columns `choose_label` would guess from, best first (see the rule above)."""
    ranked: list[tuple[int, int, str]] = []
    for order, name in enumerate(map(str, obs.columns)):
        k = _categories(obs[name])
        if k is None or not MIN_CATEGORIES <= k <= MAX_CATEGORIES or k >= len(obs):
            continue
        if ANNOTATION_NAME.search(name):
            tier = 0
        elif TECHNICAL_NAME.search(name):
            continue
        elif CLUSTER_NAME.search(name):
            tier = 2
        else:
            tier = 1
        ranked.append((tier, order, name))
    return [name for _, _, name in sorted(ranked)]


@dataclass
class LabelChoice:
    key: str | None
    source: str | None  # "given" | "guessed" | None
    note: str


def choose_label(obs: pd.DataFrame, given: str | None) -> LabelChoice:
    """The user's column (checked by the caller), else the best candidate, with a sentence saying why."""
    if given:
        k = _categories(obs[given]) if given in obs.columns else None
        return LabelChoice(given, "given", f"obs[{given!r}] as asked ({k if k is not None else '?'} categories)")
    candidates = label_candidates(obs)
    if not candidates:
        return LabelChoice(
            None,
            None,
            f"no obs column looks like a label ({MIN_CATEGORIES}-{MAX_CATEGORIES} categories, not batch/donor/"
            "sample-like); pass --label-key to score against one",
        )
    best = candidates[0]
    others = f"; other candidates: {', '.join(candidates[1:4])}" if len(candidates) > 1 else ""
    why = (
        "its name says it is an annotation"
        if ANNOTATION_NAME.search(best)
        else "a clustering (no annotation column found)"
        if CLUSTER_NAME.search(best)
        else "the first categorical column with 2-50 categories"
    )
    return LabelChoice(best, "guessed", f"guessed obs[{best!r}]: {why}{others}; --label-key picks another")


def usable_label_problem(obs: pd.DataFrame, key: str) -> str | None:
    """Why `key` cannot be scored against, or None."""
    if key not in obs.columns:
        return f"obs has no column {key!r} (columns: {', '.join(map(str, obs.columns[:20]))})"
    k = _categories(obs[key])
    if k is None:
        return f"obs[{key!r}] holds numbers ({obs[key].dtype}), not categories"
    if k < MIN_CATEGORIES:
        return f"obs[{key!r}] has {k} categor{'y' if k == 1 else 'ies'}; scores need at least {MIN_CATEGORIES}"
    return None


# ---- the scores ------------------------------------------------------------------------------------------


def scorable(labels: np.ndarray) -> np.ndarray:
    """Mask of the cells to score: labelled, in a class with at least MIN_CLASS_CELLS cells."""
    present = pd.notna(labels)
    as_text = np.where(present, labels.astype(str), "")
    names, counts = np.unique(as_text[present], return_counts=True)
    big = set(names[counts >= MIN_CLASS_CELLS])
    return present & np.isin(as_text, list(big))


def baseline_pca(counts: sp.csr_matrix, seed: int) -> np.ndarray:
    """The PCA baseline (see BASELINE) of the given cells."""
    from sklearn.decomposition import PCA

    x = sp.csr_matrix(counts, dtype=np.float64)
    totals = np.asarray(x.sum(axis=1)).ravel()
    x = sp.diags(1e4 / np.maximum(totals, 1.0)) @ x
    x.data = np.log1p(x.data)
    mean = np.asarray(x.mean(axis=0)).ravel()
    var = np.asarray(x.multiply(x).mean(axis=0)).ravel() - mean**2
    top = np.sort(np.argsort(var)[::-1][: min(BASELINE_GENES, x.shape[1])])
    dense = x[:, top].toarray()
    n_comp = max(1, min(BASELINE_COMPONENTS, dense.shape[0] - 1, dense.shape[1]))
    return PCA(n_components=n_comp, random_state=seed).fit_transform(dense)


def label_scores(x: np.ndarray, labels: np.ndarray, seed: int) -> LabelScores:
    """kNN label transfer (5-fold stratified cross-validation) and silhouette, with scikit-learn."""
    from sklearn.metrics import silhouette_score
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    y = labels.astype(str)
    x = np.asarray(x, dtype=np.float64)
    k = min(KNN_NEIGHBOURS, max(1, len(y) * (FOLDS - 1) // FOLDS - 1))
    folds = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=seed)
    knn = float(cross_val_score(KNeighborsClassifier(n_neighbors=k), x, y, cv=folds, scoring="accuracy").mean())
    sample = min(MAX_SILHOUETTE_CELLS, len(y))
    silhouette = float(silhouette_score(x, y, sample_size=sample if sample < len(y) else None, random_state=seed))
    return LabelScores(knn_accuracy=round(knn, 4), silhouette=round(silhouette, 4))
