"""Check an input `.h5ad` before anything runs: fail early with a code, the problem and a one-line fix.

The file is opened read-only, X is streamed in bounded blocks (never loaded whole), and nothing is
written anywhere: a failed validation leaves no trace. `CODES` (inputcheck.py) is the one table of input
errors (E1xx); E2xx configuration errors (unknown model E201, missing weights) come from `models`.

Every read of the file is bounded (hostile or damaged files end in a coded error, never a hang):
- before opening: UTF-8 name (E120), a regular file, not a FIFO or device (E118), HDF5 signature (E102);
- all HDF5 work runs in a child process (`bounded.call`) with a deadline (E122) and a memory cap (E123);
  a crash of the HDF5 library there is E103. Deadline: HELICAL_AIRFLOW_VALIDATE_TIMEOUT_S, else
  `VALIDATE_BASE_S` + the file size at `VALIDATE_BYTES_PER_S`; memory: HELICAL_AIRFLOW_VALIDATE_MEMORY_MB;
- inside it, every dataset's declared size is checked against the bytes it stores (E117) and links to
  other files are refused (E124) before any value is read;
- the file must not change while it is read (size, mtime, inode: E119); only the bytes seen at the
  start are hashed.
"""

from __future__ import annotations

from pathlib import Path

from . import modality, objstore
from .inputcheck import (  # noqa: F401 - re-exported: validate.CODES, validate.fail, ... as before the split
    CODES,
    ENSEMBL_ID,
    HDF5_SIGNATURE,
    LOW_OVERLAP_WARNING,
    VALIDATE_BASE_S,
    VALIDATE_BYTES_PER_S,
    VALIDATE_MEMORY_MB,
    _check_file,
    _check_kind,
    _check_unchanged,
    _not_found_hint,
    detect_gene_id_kind,
    fail,
    inspect_bounded,
    validate_memory_mb,
    validate_timeout_s,
)
from .models import get_model, registry
from .spec import InputSummary

# The checks live in inputcheck.py (shared by both modalities) and the per-modality validation in
# modality/cells.py (.h5ad: the gene vocabulary match) and modality/records.py (seqio.validate_sequences).


def validate_input(
    path: str,
    model: str,
    layer: str | None = None,
    cache_dir: str | None = None,
    data_root: Path | None = None,
    options: dict[str, str] | None = None,
) -> InputSummary:
    """Everything later steps need to know about `path`, or an InputValidationError saying what to fix.

    `data_root`: the folder relative paths were resolved in (the DAG's data folder), for E101's fix.
    The model's modality (cells: .h5ad; records: FASTA / tables) does the checks of its own kind of input.
    """
    spec = get_model(model)  # E201 for an unknown name, before touching the file
    resolved = registry.resolve_options(spec, options)  # E227 for a bad model option, too
    local = objstore.local_input(path)  # an s3://... input: its verified local copy (E9xx when it cannot be had)
    summary = modality.for_model(spec).validate(local, spec, resolved, layer, cache_dir, data_root)
    return summary if local == path else summary.model_copy(update={"source": str(objstore.parse(path))})
