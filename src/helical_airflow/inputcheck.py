"""The input checks every modality shares, and the .h5ad inspection: the one table of input error codes (E1xx,
`CODES`), the file's name, kind and signature, and the bounded HDF5 inspection.

Split from validate.py so that the modality implementations (modality/) and seqio can use these checks without
importing validate, which picks the modality (no import circle: validate -> modality -> inputcheck).
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import bounded, h5check, h5io, settings
from .errors import InputValidationError
from .spec import GeneIdKind, InputSummary

log = logging.getLogger("helical_airflow.validate")  # the name its log lines had before the split

#: code -> (what is wrong, one-line fix). Messages add the specifics of the file at hand.
CODES: dict[str, tuple[str, str]] = {
    "E101": ("input file not found", "check the path (on the command line it is relative to the current directory)"),
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
    "E117": ("a dataset declares more data than the file holds", "the file is truncated or damaged: copy it again"),
    "E118": ("input is not a regular file", "give the path of a .h5ad file, not a pipe, device or socket"),
    "E119": ("input file changed while it was read", "wait until it is fully written (copy, then rename), then retry"),
    "E120": ("input file name is not valid UTF-8", "rename the file with UTF-8 characters only"),
    "E121": ("duplicate cell IDs in obs", "make them unique: adata.obs_names_make_unique(), then save again"),
    "E122": ("reading the input took too long", "the file is likely damaged: copy it again (or raise "
             "HELICAL_AIRFLOW_VALIDATE_TIMEOUT_S for a huge file)"),
    "E123": ("reading the input needed more memory than its budget", "the file is likely damaged: copy it again (or "
             "raise HELICAL_AIRFLOW_VALIDATE_MEMORY_MB)"),
    "E124": ("input refers to other files", "save it again with anndata: external links, external or virtual "
             "datasets are not read"),
    # sequence inputs (FASTA / CSV / TSV / Parquet; seqio.py)
    "E130": ("sequence input has no records", "give a FASTA file with '>id' records, or a table with at least one row"),
    "E131": ("input is not FASTA", "FASTA starts with a '>id' header line followed by sequence lines"),
    "E132": ("input is not a readable table", "save it as CSV/TSV with a header row, or as Parquet"),
    "E133": ("the table lacks the id or sequence column", "name them with --id-column / --sequence-column"),
    "E134": ("a record has an empty sequence", "drop the record or give its sequence"),
    "E135": ("a sequence has characters outside the model's alphabet", "DNA models read ACGTN, RNA models ACGUN and "
             "T (read as U); lower case is accepted. Give the records' nucleotide sequence: RNA to an RNA model, DNA "
             "to a DNA model or either to an RNA model; N stands only for an unknown base, not for other characters"),
    "E136": ("duplicate record ids", "make the ids unique (the first word of each FASTA header, or the id column)"),
    "E137": ("a sequence is longer than the model's context", "pass --too-long truncate or --too-long window, or "
             "split the sequence"),
    "E138": ("the gzip stream is truncated or corrupt", "copy or compress the file again (gzip -t FILE checks it)"),
    "E139": ("unsupported sequence file type", "use .fa/.fasta/.fna (optionally .gz), .csv, .tsv or .parquet"),
    "E140": ("a FASTA record has no id", "give every header line an id after '>'"),
}  # fmt: skip
LOW_OVERLAP_WARNING = 0.5  # below this fraction of known genes, embeddings lose much of the cell's signal
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ENSEMBL_ID = re.compile(r"^ENS[A-Z]*G\d{6,}(\.\d+)?$")
VALIDATE_BASE_S = 6.0  # deadline of the bounded inspection: this, plus the file read at VALIDATE_BYTES_PER_S
VALIDATE_BYTES_PER_S = 25 * 2**20
VALIDATE_MEMORY_MB = 4096


def fail(code: str, detail: str, hint: str | None = None) -> InputValidationError:
    """The error for `code`, with this file's specifics in the message."""
    title, default_hint = CODES[code]
    return InputValidationError(code, f"{title}: {detail}", hint or default_hint)


def validate_timeout_s(size_bytes: int) -> float:
    configured = settings.get().validate_timeout_s
    return configured if configured is not None else VALIDATE_BASE_S + size_bytes / VALIDATE_BYTES_PER_S


def validate_memory_mb() -> int:
    return settings.get().validate_memory_mb or VALIDATE_MEMORY_MB


def validate_h5ad(
    path: str,
    model: str,
    vocabulary: Callable[[], Any],
    layer: str | None = None,
    data_root: Path | None = None,
) -> InputSummary:
    """The .h5ad checks (modality/cells.py): the file, its bounded inspection, then the genes against the model's
    vocabulary (`vocabulary()` is read only once the file passed)."""
    file = Path(path)
    before = _check_file(file, data_root)
    summary, var_names = inspect_bounded(file, layer, before.st_size)
    _check_unchanged(file, before)

    gene_kind = detect_gene_id_kind(var_names)
    vocab = vocabulary()
    # the adapters' own rule (GeneVocabulary.canonical_id: each id in its own system, version stripped), so a file
    # that validates has genes its adapter hands to helical
    known = sum(1 for gene in vocab.canonical_ids(var_names) if gene is not None)
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
        update={"gene_id_kind": gene_kind, "genes_in_vocab": known, "vocab_overlap": round(overlap, 6)}
    )


def inspect_bounded(file: Path, layer: str | None, size: int) -> tuple[InputSummary, list[str]]:
    """`h5check.inspect_file` in a child process under the deadline and memory budget; coded errors only."""
    timeout_s = validate_timeout_s(size)
    try:
        outcome = bounded.call(
            h5check.inspect_file, str(file), layer, size, h5io.BLOCK_ELEMENTS,
            timeout_s=timeout_s, memory_mb=validate_memory_mb(),
        )  # fmt: skip
    except bounded.BoundExceeded as exc:
        if exc.kind == "timeout":
            raise fail("E122", f"{file}: inspection stopped after {timeout_s:.0f}s") from None
        if exc.kind == "memory":
            raise fail("E123", f"{file}: over {validate_memory_mb()} MB") from None
        raise fail("E103", f"{file}: reading it failed ({exc.detail})") from None
    if outcome[0] == "error":
        _, code, detail, more_hint = outcome
        raise fail(code, detail, CODES[code][1] + more_hint)
    _, summary, var_names = outcome
    # the gene fields are filled in by validate_input, once the vocabulary is known
    return InputSummary(**summary, gene_id_kind="symbol", genes_in_vocab=0, vocab_overlap=0.0), var_names


def detect_gene_id_kind(names: list[str]) -> GeneIdKind:
    """Return "ensembl" when most var_names look like Ensembl gene IDs (ENSG..., ENSMUSG...), else "symbol"."""
    hits = sum(1 for n in names if ENSEMBL_ID.match(n))
    return "ensembl" if names and hits >= len(names) / 2 else "symbol"


_FILE_KINDS = {stat.S_ISFIFO: "a FIFO (named pipe)", stat.S_ISCHR: "a character device",
               stat.S_ISBLK: "a block device", stat.S_ISSOCK: "a socket"}  # fmt: skip


def _not_found_hint(data_root: Path | None) -> str | None:
    if data_root is None:
        return None
    return (f"input_path is resolved inside the data folder {data_root}: put the file there and pass its path "
            "relative to it (e.g. sample.h5ad)")  # fmt: skip


def _check_kind(file: Path, mode: int) -> None:
    if stat.S_ISDIR(mode):
        raise fail("E101", f"{file} is a directory", "give the path of the .h5ad file itself")
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _FILE_KINDS.items() if test(mode)), "not a regular file")
        raise fail("E118", f"{file} is {kind}")


def _check_file(file: Path, data_root: Path | None = None) -> os.stat_result:
    """Name, kind, size and signature, without ever blocking (a FIFO is refused before it is opened)."""
    try:
        str(file).encode("utf-8")
    except UnicodeEncodeError:
        raise fail("E120", ascii(str(file))) from None
    try:
        before = file.stat()
    except FileNotFoundError:
        raise fail("E101", str(file), _not_found_hint(data_root)) from None
    except PermissionError as exc:
        raise fail("E116", f"{file}: {exc.strerror}") from exc
    except OSError as exc:  # a symlink loop, a name too long, ...
        raise fail("E101", f"{file}: {exc.strerror}", _not_found_hint(data_root)) from exc
    _check_kind(file, before.st_mode)
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK)  # never waits, even if swapped for a FIFO meanwhile
    except PermissionError as exc:
        raise fail("E116", f"{file}: {exc.strerror}") from exc
    except OSError as exc:
        raise fail("E101", f"{file}: {exc.strerror}", _not_found_hint(data_root)) from exc
    with os.fdopen(fd, "rb") as fh:
        opened = os.fstat(fh.fileno())
        _check_kind(file, opened.st_mode)
        size = opened.st_size
        head = fh.read(8)
        # HDF5 allows a user block: the signature sits at 0, 512, 1024, 2048, ...
        offset = 512
        while head != HDF5_SIGNATURE and offset + 8 <= size:
            fh.seek(offset)
            head = fh.read(8)
            offset *= 2
    if size == 0:
        raise fail("E102", f"{file} is empty (0 bytes)")
    if head != HDF5_SIGNATURE:
        raise fail("E102", f"{file} has no HDF5 signature")
    return opened


def _check_unchanged(file: Path, before: os.stat_result) -> None:
    try:
        after = file.stat()
    except OSError as exc:
        raise fail("E119", f"{file} disappeared while it was read ({exc.strerror})") from exc
    same = (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
    if not same:
        raise fail("E119", f"{file} was {before.st_size} bytes, now {after.st_size} (or was rewritten)")
