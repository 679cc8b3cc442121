"""What `validate` checks inside the file, run in a bounded child process (validate.inspect_bounded).

Reads only, a bounded block at a time; imports neither the models nor anything heavy beyond h5py and
anndata, so the child starts quickly. Problems are raised as `Problem(code, detail)`; validate.py turns
them into InputValidationError with the text of validate.CODES.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

from . import h5io

#: deflate's best ratio is ~1032:1; a compressed dataset declaring more than this per stored byte is refused (E117)
MAX_COMPRESSION_RATIO = 1100


class Problem(Exception):
    """An input problem found in the child: its code (validate.CODES), the file's specifics, more of the fix."""

    def __init__(self, code: str, detail: str, more_hint: str = "") -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.more_hint = more_hint


def inspect_file(path: str, layer: str | None, size: int, block: int) -> tuple[Any, ...]:
    """The bounded child's work: ("ok", summary fields, var names) or ("error", code, detail, extra hint)."""
    h5io.BLOCK_ELEMENTS = block
    file = Path(path)
    try:
        with h5py.File(file, "r") as h5:
            _check_storage(h5, size)
            summary = _inspect(h5, file, layer, size)
            var_names = _var_names(h5)
            _check_cells(h5)
        summary["sha256"] = h5io.sha256_file(file, size)
    except Problem as problem:
        return ("error", problem.code, problem.detail, problem.more_hint)
    except MemoryError:
        raise  # the bounded call reports it (E123)
    except Exception as exc:  # noqa: BLE001 - h5py raises many types on damaged files; every one is E103 here
        return ("error", "E103", f"{path}: {type(exc).__name__}: {exc}", "")
    return ("ok", summary, var_names)


def _check_storage(h5: h5py.File, file_size: int) -> None:
    """Before any value is read: no dataset declares more bytes than it stores, and nothing points to other files."""
    problems: list[Problem] = []

    def visit(name: str, link: Any) -> None:
        if problems:
            return
        if isinstance(link, h5py.ExternalLink):
            problems.append(Problem("E124", f"/{name} is a link to {link.filename}:{link.path}"))
            return
        if not isinstance(link, h5py.HardLink):
            return
        obj = h5.get(name)
        if not isinstance(obj, h5py.Dataset) or obj.shape is None:
            return
        if obj.is_virtual or obj.external:
            problems.append(Problem("E124", f"/{name} keeps its data in other files"))
            return
        declared = int(np.prod(obj.shape, dtype=object)) * obj.dtype.itemsize
        stored = obj.id.get_storage_size()
        filtered = obj.id.get_create_plist().get_nfilters() > 0
        limit = stored * MAX_COMPRESSION_RATIO if filtered else stored
        if declared > limit or stored > file_size:
            how = "compressed " if filtered else ""
            detail = f"/{name} declares shape {obj.shape} ({declared} bytes) but stores {stored} {how}bytes"
            problems.append(Problem("E117", f"{detail} (file: {file_size} bytes)"))

    h5.visititems_links(visit)
    if problems:
        raise problems[0]


def _inspect(h5: h5py.File, file: Path, layer: str | None, size: int) -> dict[str, Any]:
    """Layout, shape and a streamed scan of the values; gene and hash fields are filled by the caller."""
    source = h5io.matrix_source(layer)
    try:
        reader = h5io.CountsReader(h5, layer)
    except h5io.MatrixNotFoundError as exc:
        layers = ", ".join(exc.layers) or "none"
        if layer is None:
            raise Problem("E104", f"{file} has no X (layers in the file: {layers})") from exc
        raise Problem("E113", f"layer {layer!r} is not in {file} (layers in the file: {layers})") from exc
    except h5io.UnsupportedMatrixError as exc:
        raise Problem("E105", str(exc)) from exc
    if reader.n_cells < 0 or reader.n_genes < 0:
        raise Problem("E114", f"{source} has a negative shape ({reader.n_cells}, {reader.n_genes})")
    if reader.n_cells == 0:
        raise Problem("E106", f"{source} has shape ({reader.n_cells}, {reader.n_genes})")
    if reader.n_genes == 0:
        raise Problem("E107", f"{source} has shape ({reader.n_cells}, {reader.n_genes})")
    if reader.format != "dense":
        _check_sparse_structure(reader)
    _check_tables(h5, reader)
    _check_values(reader, [name for name in h5io.list_layers(h5) if name != layer])
    return dict(
        path=str(file.resolve()),
        size_bytes=size,
        n_cells=reader.n_cells,
        n_genes=reader.n_genes,
        x_source=source,
        x_format=reader.format,
        dtype=str(reader.dtype),
    )


def _table_length(h5: h5py.File, name: str) -> int | None:
    """Rows of the obs/var dataframe, from its index dataset (without reading it)."""
    group = h5.get(name)
    if not isinstance(group, h5py.Group):
        return None
    index = group.get(str(group.attrs.get("_index", "_index")))
    return int(index.shape[0]) if isinstance(index, h5py.Dataset) else None


def _check_tables(h5: h5py.File, reader: h5io.CountsReader) -> None:
    for name, expected in (("obs", reader.n_cells), ("var", reader.n_genes)):
        rows = _table_length(h5, name)
        if rows is None:
            raise Problem("E115", f"the file has no readable {name} table")
        if rows != expected:
            raise Problem("E115", f"{name} has {rows} rows but {reader.source} has {expected}")


def _var_names(h5: h5py.File) -> list[str]:
    group = h5.get("var")
    index = group.get(str(group.attrs.get("_index", "_index"))) if isinstance(group, h5py.Group) else None
    if isinstance(index, h5py.Dataset) and index.dtype.kind in "OSU":  # anndata's layout: read just the index
        names = [_text(n) for n in index[()]]
    else:  # older layouts: anndata's reader
        names = [str(n) for n in h5io.read_var(h5).index]
    duplicated = pd.Index(names)[pd.Index(names).duplicated()].unique()
    if len(duplicated):
        shown = ", ".join(map(str, duplicated[:5])) + (" ..." if len(duplicated) > 5 else "")
        raise Problem("E111", f"{len(duplicated)} gene IDs appear more than once ({shown})")
    return names


# Cell names hashed at once. Each is a Python bytes object while it is hashed (~50 bytes with its pointer), so a
# block of h5io.BLOCK_ELEMENTS (4M) names would hold every name of a 1M-cell file: measured with bench/scale.py,
# validation's peak RSS then grew 186 -> 299 MB from 100k to 1M cells; 64k names a block keep it to the hashes.
NAME_BLOCK = 1 << 16


def _check_cells(h5: h5py.File) -> None:
    """Cell IDs are unique: hashed a block at a time (8 bytes per cell), equal hashes compared exactly."""
    group = h5["obs"]
    index = group[str(group.attrs.get("_index", "_index"))]
    hashes = np.concatenate(
        [pd.util.hash_array(np.asarray(block, dtype=object)) for _, block in _blocks(index, NAME_BLOCK)]
        or [np.empty(0, np.uint64)]
    )
    ordered = np.sort(hashes)  # the common case, no equal hashes, needs no argsort (8 more bytes per cell)
    if not np.any(ordered[1:] == ordered[:-1]):
        return
    del ordered
    order = np.argsort(hashes, kind="stable")
    same = np.flatnonzero(hashes[order][1:] == hashes[order][:-1])
    if same.size == 0:
        return
    pairs = [(int(order[i]), int(order[i + 1])) for i in same[:1000]]
    dupes = sorted({_text(index[a]) for a, b in pairs if index[a] == index[b]})
    if dupes:
        shown = ", ".join(dupes[:5]) + (" ..." if len(dupes) > 5 else "")
        raise Problem("E121", f"{same.size} cell IDs appear more than once ({shown})")


def _text(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _blocks(dataset: h5py.Dataset, block: int = h5io.BLOCK_ELEMENTS) -> Iterator[tuple[int, np.ndarray]]:
    for lo in range(0, dataset.shape[0], block):
        yield lo, dataset[lo : lo + block]


def _check_sparse_structure(reader: h5io.CountsReader) -> None:
    """indptr runs 0..nnz without going down, indices stay inside the other axis: checked in blocks."""
    assert reader.indptr is not None and reader.indices is not None
    major, minor = (reader.n_cells, reader.n_genes) if reader.format == "csr" else (reader.n_genes, reader.n_cells)
    nnz = reader.data.shape[0]
    where = f"{reader.source} ({reader.format})"
    if reader.indptr.shape[0] != major + 1:
        raise Problem("E114", f"{where} indptr has {reader.indptr.shape[0]} entries, expected {major + 1}")
    if reader.indices.shape[0] != nnz:
        raise Problem("E114", f"{where} has {nnz} values but {reader.indices.shape[0]} indices")
    previous = 0
    for lo, ptr in _blocks(reader.indptr):
        if lo == 0 and ptr[0] != 0:
            raise Problem("E114", f"{where} indptr starts at {ptr[0]}, not 0")
        if ptr[0] < previous or np.any(np.diff(ptr) < 0):
            raise Problem("E114", f"{where} indptr decreases")
        previous = int(ptr[-1])
    if previous != nnz:
        raise Problem("E114", f"{where} indptr ends at {previous} but there are {nnz} values")
    for _, idx in _blocks(reader.indices):
        if idx.size and (idx.min() < 0 or idx.max() >= minor):
            raise Problem("E114", f"{where} has an index outside 0..{minor - 1}")


def _check_values(reader: h5io.CountsReader, other_layers: list[str]) -> None:
    """Count NaN/inf, negative and fractional values over the whole matrix, a block at a time."""
    if reader.dtype == np.bool_:
        raise Problem("E108", f"{reader.source} holds booleans, not counts")
    floating = np.issubdtype(reader.dtype, np.floating) or np.issubdtype(reader.dtype, np.complexfloating)
    signed = floating or np.issubdtype(reader.dtype, np.signedinteger)
    if np.issubdtype(reader.dtype, np.complexfloating):
        raise Problem("E108", f"{reader.source} holds complex numbers ({reader.dtype})")
    not_finite = negative = fractional = 0
    example = 0.0
    for values in reader.iter_values():
        if floating:
            finite = np.isfinite(values)
            not_finite += int(values.size - np.count_nonzero(finite))
            values = values[finite]
            fractions = values != np.floor(values)
            if fractional == 0 and fractions.any():
                example = float(values[fractions][0])
            fractional += int(np.count_nonzero(fractions))
        if signed:
            negative += int(np.count_nonzero(values < 0))
    where = f"{reader.source} ({reader.dtype})"
    if not_finite:
        raise Problem("E110", f"{where} has {not_finite} NaN/inf values")
    if negative:
        raise Problem("E109", f"{where} has {negative} negative values")
    if fractional:
        more = ""
        if other_layers:  # the raw counts are often kept in a layer next to normalised X
            more = f"; layers in this file: {', '.join(other_layers)} (e.g. --layer {other_layers[0]})"
        raise Problem("E108", f"{where} has {fractional} non-integer values (e.g. {example:g})", more)
