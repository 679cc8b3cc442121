"""Check an input `.h5ad` before anything runs: fail early with a code, the problem and a one-line fix.

The file is opened read-only, X is streamed in bounded blocks (never loaded whole), and nothing is
written anywhere: a failed validation leaves no trace. `CODES` below is the one table of input
errors (E1xx); E2xx configuration errors (unknown model E201, missing weights) come from `models`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from . import h5io
from .errors import InputValidationError
from .models import get_model
from .spec import GeneIdKind, InputSummary

log = logging.getLogger(__name__)

#: code -> (what is wrong, one-line fix). Messages add the specifics of the file at hand.
CODES: dict[str, tuple[str, str]] = {
    "E101": ("input file not found", "check the path (relative paths are resolved from the current directory)"),
    "E102": ("input is not an HDF5 (.h5ad) file", "save it with anndata: adata.write_h5ad('file.h5ad')"),
    "E103": ("input file is truncated or corrupt", "copy or download the file again and compare its checksum"),
    "E104": ("input has no X matrix", "store raw counts in X, or name the layer holding them with --layer NAME"),
    "E105": ("unsupported counts matrix layout", "store X as CSR, CSC or dense numbers: adata.X = csr_matrix(adata.X)"),
    "E106": ("input has zero cells", "check the file: it has no rows (cells) to embed"),
    "E107": ("input has zero genes", "check the file: it has no columns (genes) to embed"),
    "E108": ("counts are not integers", "give raw counts, not normalised/log values: put them in X or use --layer"),
    "E109": ("counts are negative", "give raw counts (>= 0), not scaled or centred values"),
    "E110": ("counts contain NaN or infinity", "replace NaN/inf with raw integer counts before embedding"),
    "E111": ("duplicate gene IDs in var", "make them unique: adata.var_names_make_unique(), then save again"),
    "E112": ("no genes in the model's vocabulary", "use Ensembl IDs or symbols the model knows as var_names"),
    "E113": ("requested layer not found", "pass one of the layers listed, or leave out --layer to use X"),
    "E114": ("sparse matrix is malformed", "rebuild the matrix: adata.X = csr_matrix(adata.X), then save again"),
    "E115": ("obs/var do not match the counts matrix", "save the file again with anndata so obs, var and X agree"),
    "E116": ("input file cannot be read", "check the file's permissions (it is only read, never written)"),
}
LOW_OVERLAP_WARNING = 0.5  # below this fraction of known genes, embeddings lose much of the cell's signal
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ENSEMBL_ID = re.compile(r"^ENS[A-Z]*G\d{6,}(\.\d+)?$")


def fail(code: str, detail: str, hint: str | None = None) -> InputValidationError:
    """The error for `code`, with this file's specifics in the message."""
    title, default_hint = CODES[code]
    return InputValidationError(code, f"{title}: {detail}", hint or default_hint)


def validate_input(path: str, model: str, layer: str | None = None, cache_dir: str | None = None) -> InputSummary:
    """Everything later steps need to know about `path`, or an InputValidationError saying what to fix."""
    spec = get_model(model)  # E201 for an unknown name, before touching the file
    file = Path(path)
    _check_file(file)
    try:
        with h5py.File(file, "r") as h5:
            summary = _inspect(h5, file, layer)
        var_names = _var_names(file)
    except InputValidationError:
        raise
    except (OSError, KeyError, RuntimeError, ValueError) as exc:  # what h5py raises on damaged files
        raise fail("E103", f"{path}: {exc}") from exc

    gene_kind = detect_gene_id_kind(var_names)
    vocab = spec.gene_vocabulary(cache_dir)
    pool = vocab.ensembl if gene_kind == "ensembl" else vocab.symbols
    ids = [n.split(".", 1)[0] for n in var_names] if gene_kind == "ensembl" else var_names
    known = sum(1 for gene in ids if gene in pool)
    overlap = known / len(var_names)
    if known == 0:
        raise fail(
            "E112",
            f"0 of {len(var_names)} genes ({gene_kind} IDs such as {', '.join(var_names[:3])}) are known to {model} "
            f"(overlap 0.0%)",
        )
    if overlap < LOW_OVERLAP_WARNING:
        log.warning(
            "only %d of %d genes (%.1f%%) are in %s's vocabulary; the rest are ignored by the model",
            known,
            len(var_names),
            100 * overlap,
            model,
        )
    return summary.model_copy(
        update={
            "sha256": h5io.sha256_file(file),
            "gene_id_kind": gene_kind,
            "genes_in_vocab": known,
            "vocab_overlap": round(overlap, 6),
        }
    )


def detect_gene_id_kind(names: list[str]) -> GeneIdKind:
    """Return "ensembl" when most var_names look like Ensembl gene IDs (ENSG..., ENSMUSG...), else "symbol"."""
    hits = sum(1 for n in names if ENSEMBL_ID.match(n))
    return "ensembl" if names and hits >= len(names) / 2 else "symbol"


def _check_file(file: Path) -> None:
    if not file.exists():
        raise fail("E101", str(file))
    if file.is_dir():
        raise fail("E101", f"{file} is a directory", "give the path of the .h5ad file itself")
    try:
        size = file.stat().st_size
        with file.open("rb") as fh:
            head = fh.read(8)
            # HDF5 allows a user block: the signature sits at 0, 512, 1024, 2048, ...
            offset = 512
            while head != HDF5_SIGNATURE and offset + 8 <= size:
                fh.seek(offset)
                head = fh.read(8)
                offset *= 2
    except PermissionError as exc:
        raise fail("E116", f"{file}: {exc.strerror}") from exc
    if size == 0:
        raise fail("E102", f"{file} is empty (0 bytes)")
    if head != HDF5_SIGNATURE:
        raise fail("E102", f"{file} has no HDF5 signature")


def _inspect(h5: h5py.File, file: Path, layer: str | None) -> InputSummary:
    """Layout, shape and a streamed scan of the values; gene and hash fields are filled by the caller."""
    source = h5io.matrix_source(layer)
    try:
        reader = h5io.CountsReader(h5, layer)
    except h5io.MatrixNotFoundError as exc:
        layers = ", ".join(exc.layers) or "none"
        if layer is None:
            raise fail("E104", f"{file} has no X (layers in the file: {layers})") from exc
        raise fail("E113", f"layer {layer!r} is not in {file} (layers in the file: {layers})") from exc
    except h5io.UnsupportedMatrixError as exc:
        raise fail("E105", str(exc)) from exc
    if reader.n_cells == 0:
        raise fail("E106", f"{source} has shape ({reader.n_cells}, {reader.n_genes})")
    if reader.n_genes == 0:
        raise fail("E107", f"{source} has shape ({reader.n_cells}, {reader.n_genes})")
    _check_tables(h5, reader)
    if reader.format != "dense":
        _check_sparse_structure(reader)
    _check_values(reader, [name for name in h5io.list_layers(h5) if name != layer])
    return InputSummary(
        path=str(file.resolve()),
        sha256="",
        size_bytes=file.stat().st_size,
        n_cells=reader.n_cells,
        n_genes=reader.n_genes,
        x_source=source,
        x_format=reader.format,
        dtype=str(reader.dtype),
        gene_id_kind="symbol",
        genes_in_vocab=0,
        vocab_overlap=0.0,
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
            raise fail("E115", f"the file has no readable {name} table")
        if rows != expected:
            raise fail("E115", f"{name} has {rows} rows but {reader.source} has {expected}")


def _var_names(file: Path) -> list[str]:
    names = [str(n) for n in h5io.read_var(file).index]
    duplicated = pd.Index(names)[pd.Index(names).duplicated()].unique()
    if len(duplicated):
        shown = ", ".join(map(str, duplicated[:5])) + (" ..." if len(duplicated) > 5 else "")
        raise fail("E111", f"{len(duplicated)} gene IDs appear more than once ({shown})")
    return names


def _blocks(dataset: h5py.Dataset) -> Iterator[tuple[int, np.ndarray]]:
    block = h5io.BLOCK_ELEMENTS
    for lo in range(0, dataset.shape[0], block):
        yield lo, dataset[lo : lo + block]


def _check_sparse_structure(reader: h5io.CountsReader) -> None:
    """indptr runs 0..nnz without going down, indices stay inside the other axis: checked in blocks."""
    assert reader.indptr is not None and reader.indices is not None
    major, minor = (reader.n_cells, reader.n_genes) if reader.format == "csr" else (reader.n_genes, reader.n_cells)
    nnz = reader.data.shape[0]
    where = f"{reader.source} ({reader.format})"
    if reader.indptr.shape[0] != major + 1:
        raise fail("E114", f"{where} indptr has {reader.indptr.shape[0]} entries, expected {major + 1}")
    if reader.indices.shape[0] != nnz:
        raise fail("E114", f"{where} has {nnz} values but {reader.indices.shape[0]} indices")
    previous = 0
    for lo, ptr in _blocks(reader.indptr):
        if lo == 0 and ptr[0] != 0:
            raise fail("E114", f"{where} indptr starts at {ptr[0]}, not 0")
        if ptr[0] < previous or np.any(np.diff(ptr) < 0):
            raise fail("E114", f"{where} indptr decreases")
        previous = int(ptr[-1])
    if previous != nnz:
        raise fail("E114", f"{where} indptr ends at {previous} but there are {nnz} values")
    for _, idx in _blocks(reader.indices):
        if idx.size and (idx.min() < 0 or idx.max() >= minor):
            raise fail("E114", f"{where} has an index outside 0..{minor - 1}")


def _check_values(reader: h5io.CountsReader, other_layers: list[str]) -> None:
    """Count NaN/inf, negative and fractional values over the whole matrix, a block at a time."""
    if reader.dtype == np.bool_:
        raise fail("E108", f"{reader.source} holds booleans, not counts")
    floating = np.issubdtype(reader.dtype, np.floating) or np.issubdtype(reader.dtype, np.complexfloating)
    signed = floating or np.issubdtype(reader.dtype, np.signedinteger)
    if np.issubdtype(reader.dtype, np.complexfloating):
        raise fail("E108", f"{reader.source} holds complex numbers ({reader.dtype})")
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
        raise fail("E110", f"{where} has {not_finite} NaN/inf values")
    if negative:
        raise fail("E109", f"{where} has {negative} negative values")
    if fractional:
        hint = CODES["E108"][1]
        if other_layers:  # the raw counts are often kept in a layer next to normalised X
            hint += f"; layers in this file: {', '.join(other_layers)} (e.g. --layer {other_layers[0]})"
        raise fail("E108", f"{where} has {fractional} non-integer values (e.g. {example:g})", hint)
