"""Streaming, read-only access to `.h5ad` files with h5py: row ranges of X without loading X whole.

A worker's memory must depend on the shard size, not on the dataset size, so every read here takes
only the rows it needs:
- CSR X (anndata's default): slice `indptr`, then only that row range of `data` and `indices`.
- dense X: slice the dataset's rows.
- CSC X (column-major): the rows of a shard are spread over every column, so `read_rows` scans
  `data`/`indices` in fixed-size blocks and keeps the entries of the wanted rows. Memory stays bounded
  (one block + the shard), but each shard reads the whole matrix: converting the file to CSR is
  much faster for large CSC inputs (`adata.X = adata.X.tocsr()`).
Files are always opened read-only; nothing here writes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

if TYPE_CHECKING:
    import anndata as ad


def read_elem(elem: Any) -> Any:
    """anndata's reader, imported on first use (anndata takes ~0.5 s to import; validation's child needs it rarely)."""
    from anndata.io import read_elem as read

    return read(elem)


MatrixFormat = Literal["csr", "csc", "dense"]
BLOCK_ELEMENTS = 1 << 22  # entries read at once when scanning (4M: ~32 MB for int32 data + indices)
HASH_CHUNK = 1 << 20
GATHER_ROWS = 1 << 16  # rows of one obs column read at once when only some are wanted (read_obs_column_rows)


class MatrixNotFoundError(LookupError):
    """The requested counts matrix (X or layers/<name>) is not in the file."""

    def __init__(self, source: str, layers: list[str]) -> None:
        super().__init__(f"{source} not found (layers in file: {layers or 'none'})")
        self.source = source
        self.layers = layers


class UnsupportedMatrixError(ValueError):
    """The counts matrix exists but is not a CSR, CSC or dense numeric matrix anndata would write."""


def matrix_source(layer: str | None) -> str:
    """HDF5 path of the counts matrix: "X" or "layers/<name>"."""
    return "X" if layer is None else f"layers/{layer}"


def list_layers(h5: h5py.File) -> list[str]:
    layers = h5.get("layers")
    return sorted(layers.keys()) if isinstance(layers, h5py.Group) else []


class CountsReader:
    """Row-range reads of one counts matrix in an open h5py file; use `open_counts` to get one."""

    def __init__(self, h5: h5py.File, layer: str | None) -> None:
        self.h5 = h5
        self.source = matrix_source(layer)
        elem = h5.get(self.source)
        if elem is None:
            raise MatrixNotFoundError(self.source, list_layers(h5))
        # sparse parts are None for dense matrices
        self.indptr: h5py.Dataset | None = None
        self.indices: h5py.Dataset | None = None
        self.format: MatrixFormat
        if isinstance(elem, h5py.Dataset):
            if elem.ndim != 2:
                raise UnsupportedMatrixError(f"{self.source} is a {elem.ndim}-d array, expected 2-d")
            self.format = "dense"
            self.data = elem
            self.n_cells, self.n_genes = (int(n) for n in elem.shape)
        elif isinstance(elem, h5py.Group):
            kind = _sparse_kind(elem)
            if kind is None or not {"data", "indices", "indptr"} <= set(elem.keys()):
                raise UnsupportedMatrixError(
                    f"{self.source} is a group but not a CSR/CSC sparse matrix "
                    f"(encoding-type={elem.attrs.get('encoding-type')!r}, members={sorted(elem.keys())})"
                )
            self.format = kind
            self.data = elem["data"]
            self.indices = elem["indices"]
            self.indptr = elem["indptr"]
            shape = elem.attrs.get("shape", elem.attrs.get("h5sparse_shape"))
            if shape is None or len(shape) != 2:
                raise UnsupportedMatrixError(f"{self.source} has no 2-d 'shape' attribute")
            self.n_cells, self.n_genes = (int(n) for n in shape)
        else:
            raise UnsupportedMatrixError(f"{self.source} is neither an HDF5 dataset nor a group")
        if not (np.issubdtype(self.data.dtype, np.number) or self.data.dtype == np.bool_):
            raise UnsupportedMatrixError(f"{self.source} holds {self.data.dtype}, not numbers")
        self.dtype = np.dtype(self.data.dtype)

    def read_rows(self, start: int, stop: int) -> sp.csr_matrix:
        """Rows [start, stop) as CSR, reading only what those rows need (CSC: see module doc)."""
        if not 0 <= start <= stop <= self.n_cells:
            raise ValueError(f"row range [{start}, {stop}) is outside 0..{self.n_cells}")
        shape = (stop - start, self.n_genes)
        if self.format == "dense":
            return sp.csr_matrix(self.data[start:stop], shape=shape)
        assert self.indptr is not None and self.indices is not None
        if self.format == "csr":
            indptr = self.indptr[start : stop + 1].astype(np.int64)
            lo, hi = int(indptr[0]), int(indptr[-1])
            return sp.csr_matrix((self.data[lo:hi], self.indices[lo:hi], indptr - lo), shape=shape)
        return self._read_rows_csc(start, stop, shape)

    def _read_rows_csc(self, start: int, stop: int, shape: tuple[int, int]) -> sp.csr_matrix:
        assert self.indptr is not None and self.indices is not None
        col_ptr = self.indptr[:].astype(np.int64)  # n_genes + 1 entries: small
        rows: list[np.ndarray] = []
        cols: list[np.ndarray] = []
        vals: list[np.ndarray] = []
        for lo in range(0, int(col_ptr[-1]), BLOCK_ELEMENTS):
            hi = min(lo + BLOCK_ELEMENTS, int(col_ptr[-1]))
            row_idx = self.indices[lo:hi]
            keep = np.flatnonzero((row_idx >= start) & (row_idx < stop))
            if keep.size == 0:
                continue
            rows.append(row_idx[keep].astype(np.int64) - start)
            cols.append(np.searchsorted(col_ptr, lo + keep, side="right") - 1)
            vals.append(self.data[lo:hi][keep])
        if not rows:
            return sp.csr_matrix(shape, dtype=self.dtype)
        coo = sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=shape)
        return coo.tocsr()

    def iter_values(self, block: int | None = None) -> Iterator[np.ndarray]:
        """Every stored value (sparse: the non-zeros; dense: all), a bounded block at a time."""
        block = block or BLOCK_ELEMENTS
        if self.format == "dense":
            rows_per_block = max(1, block // max(1, self.n_genes))
            for lo in range(0, self.n_cells, rows_per_block):
                yield np.asarray(self.data[lo : lo + rows_per_block]).ravel()
            return
        for lo in range(0, self.data.shape[0], block):
            yield self.data[lo : lo + block]


def _sparse_kind(group: h5py.Group) -> MatrixFormat | None:
    encoding = group.attrs.get("encoding-type", group.attrs.get("h5sparse_format"))
    if isinstance(encoding, bytes):
        encoding = encoding.decode()
    kinds: dict[str, MatrixFormat] = {"csr_matrix": "csr", "csc_matrix": "csc", "csr": "csr", "csc": "csc"}
    return kinds.get(str(encoding))


class _OpenCounts:
    """Context manager owning the h5py file behind a CountsReader."""

    def __init__(self, path: str | Path, layer: str | None) -> None:
        self.h5 = h5py.File(path, "r")
        try:
            self.reader = CountsReader(self.h5, layer)
        except BaseException:
            self.h5.close()
            raise

    def __enter__(self) -> CountsReader:
        return self.reader

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.h5.close()


def open_counts(path: str | Path, layer: str | None = None) -> _OpenCounts:
    """`with open_counts(path, layer) as reader:` - read-only access to X (or layers/<layer>)."""
    return _OpenCounts(path, layer)


def read_var(path: str | Path | h5py.File) -> pd.DataFrame:
    """The gene table (small: one row per gene), from a path or an open file."""
    if isinstance(path, h5py.File):
        return _as_frame(read_elem(path["var"]))
    with h5py.File(path, "r") as h5:
        return _as_frame(read_elem(h5["var"]))


def read_obs(
    path: str | Path, start: int | None = None, stop: int | None = None, columns: list[str] | None = None,
    names: bool = True,
) -> pd.DataFrame:  # fmt: skip
    """The cell table, or only rows [start, stop) of it, read column by column without the rest; `columns`: only
    those (an empty list: the cell names alone); `names=False`: not the cell names (a RangeIndex from `start`).
    Why that: a million names are a million Python strings (~100 MB), which a label column does not need."""
    with h5py.File(path, "r") as h5:
        group = h5["obs"]
        if start is None and stop is None and columns is None and names:
            return _as_frame(read_elem(group))
        rows = slice(start, stop)
        if group.attrs.get("encoding-type") != "dataframe" or group.attrs.get("encoding-version") != "0.2.0":
            whole = _as_frame(read_elem(group)).iloc[rows]  # old layouts: read whole, then slice
            whole = whole if columns is None else whole[columns]
            return whole if names else whole.set_axis(pd.RangeIndex(rows.start or 0, (rows.start or 0) + len(whole)))
        index_key = str(group.attrs["_index"])
        if names:
            index = pd.Index(_read_column(group[index_key], rows), name=index_key if index_key != "_index" else None)
        else:
            first, last, _ = rows.indices(int(group[index_key].shape[0]))
            index = pd.RangeIndex(first, max(first, last))
        if columns is None:
            columns = [str(c) for c in group.attrs.get("column-order", [])]
        data = {name: _read_column(group[name], rows) for name in columns}
        return pd.DataFrame(data, index=index, columns=columns)


def _read_column(elem: Any, rows: slice) -> Any:
    """One obs column, sliced on disk where anndata's encoding allows it."""
    encoding = elem.attrs.get("encoding-type")
    if isinstance(elem, h5py.Dataset) and encoding == "string-array":
        return elem.asstr()[rows]
    if isinstance(elem, h5py.Dataset) and encoding == "array":
        return elem[rows]
    if encoding == "categorical":
        return pd.Categorical.from_codes(
            elem["codes"][rows],
            categories=_read_small(elem["categories"]),
            ordered=bool(elem.attrs.get("ordered", False)),
        )
    # nullable arrays and anything rarer: read the one column whole (one value per cell), then slice
    return read_elem(elem)[rows]


def read_obs_column_rows(path: str | Path, key: str, rows: np.ndarray) -> np.ndarray | None:
    """Column obs[key] at the sorted positions `rows` (an object array, missing values as NaN, as
    `read_obs(path)[key].to_numpy()[rows]` gives them), without the cell names or the other columns; None when
    the file's obs is not anndata's current dataframe encoding or has no such column (read the table then).

    A categorical reads its codes (1-2 bytes a cell) and categories; strings and numbers are read in row blocks,
    keeping the wanted rows. Why: the report needs the label of 20,000 pictured cells, and the whole obs table of
    1,000,000 cells (names as Python strings) was most of its memory growth (docs/benchmarks.md)."""
    with h5py.File(path, "r") as h5:
        group = h5.get("obs")
        if not isinstance(group, h5py.Group) or group.attrs.get("encoding-type") != "dataframe" \
                or group.attrs.get("encoding-version") != "0.2.0" or key not in group:  # fmt: skip
            return None
        elem = group[key]
        encoding = elem.attrs.get("encoding-type")
        if encoding == "categorical":
            categories = np.asarray(_read_small(elem["categories"]), dtype=object)
            codes = _gather(elem["codes"], rows)
            values = np.full(len(rows), np.nan, dtype=object)
            present = codes >= 0
            values[present] = categories[codes[present]]
            return values
        if isinstance(elem, h5py.Dataset) and encoding in ("string-array", "array"):
            return np.asarray(_gather(elem.asstr() if encoding == "string-array" else elem, rows), dtype=object)
        return np.asarray(read_elem(elem), dtype=object)[rows]  # nullable arrays and rarer: one column whole


def _read_small(elem: Any) -> Any:
    """A small array (a categorical's categories) with h5py where it is a plain one: anndata's reader costs its
    import (measured 6 s of the report's 37 s at 100,000 cells, under load), which the report needs nowhere else."""
    encoding = elem.attrs.get("encoding-type")
    if isinstance(elem, h5py.Dataset) and encoding == "string-array":
        return elem.asstr()[:]
    if isinstance(elem, h5py.Dataset) and encoding == "array":
        return elem[:]
    return read_elem(elem)


def _gather(dataset: Any, rows: np.ndarray) -> np.ndarray:
    """dataset[rows] for sorted `rows`, reading only the GATHER_ROWS-row blocks that hold one (h5py's point
    selection of thousands of rows is slower than reading the blocks)."""
    block, parts = GATHER_ROWS, []
    for lo in np.unique(rows // block).tolist():
        start, stop = lo * block, min((lo + 1) * block, len(dataset))
        hit = rows[(rows >= start) & (rows < stop)]
        parts.append(np.asarray(dataset[start:stop])[hit - start])
    return np.concatenate(parts) if parts else np.asarray(dataset[0:0])


def _as_frame(value: Any) -> pd.DataFrame:
    if not isinstance(value, pd.DataFrame):
        raise UnsupportedMatrixError(f"expected a dataframe group, got {type(value).__name__}")
    return value


def read_shard(path: str | Path, start: int, stop: int, layer: str | None = None) -> ad.AnnData:
    """Cells [start, stop): counts as CSR in X, their names and the gene names - what a model embeds (no obs
    column: helical reads some as instructions, models.runner.clean_input, so they are never read)."""
    import anndata as ad

    with open_counts(path, layer) as reader:
        counts = reader.read_rows(start, stop)
    return ad.AnnData(X=counts, obs=read_obs(path, start, stop, columns=[]), var=read_var(path).iloc[:, :0])


def sha256_file(path: str | Path, size: int | None = None) -> str:
    """sha256 of the file, or of its first `size` bytes (a file that keeps growing is never read unbounded)."""
    digest = hashlib.sha256()
    left = size
    with open(path, "rb") as fh:
        while left is None or left > 0:
            block = fh.read(HASH_CHUNK if left is None else min(HASH_CHUNK, left))
            if not block:
                break
            digest.update(block)
            if left is not None:
                left -= len(block)
    return digest.hexdigest()
