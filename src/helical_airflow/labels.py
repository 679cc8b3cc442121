"""A label column, read the same way by every job that learns from one: fine-tuning (finetune.py) and annotation
from a reference (annotate.py), so one messy column gives both jobs the same classes.

The rule (docs/annotate.md, docs/finetune.md): each value is turned into text (numbers count: cluster ids) with
the spaces around it stripped; a cell is **unlabelled** when its value is missing (NaN, None) or its text is empty,
`unknown`, `nan` or `none` (any case). `nan`/`none` are what a missing value becomes when a column was cast to text
before it was saved (pandas' `astype(str)`); `unknown` is the label annotation gives a cell below its confidence
threshold, so a class of that name could never be told apart from a refused prediction. Unlabelled cells are left
out of training and of scoring.

Errors, one code per problem, the same in both jobs: E701 no such column, E702 fewer than two classes, E703 a
class with fewer cells than the job needs (two for a training/validation split, one per fold for cross-validation).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from .errors import ConfigError

UNKNOWN = "unknown"  # annotation's prediction below the confidence threshold
#: texts (lower-cased, stripped) that mean "no label"
UNLABELLED = frozenset({"", UNKNOWN, "nan", "none"})


def normalise(column: pd.Series) -> np.ndarray:
    """The column's values as stripped text (object array), None where a cell is unlabelled (the module's rule)."""
    text = column.astype(str).str.strip()
    missing = column.isna().to_numpy() | text.str.lower().isin(UNLABELLED).to_numpy()
    out = text.to_numpy(dtype=object)
    out[missing] = None
    return out


def require_column(table: pd.DataFrame, key: str, where: str, hint: str) -> None:
    """E701 when `table` has no column `key` (the message lists the columns it has)."""
    if key not in table.columns:
        columns = ", ".join(map(str, table.columns[:30])) or "none"
        raise ConfigError("E701", f"{where} has no label column {key!r} (its columns: {columns})", hint)


def read_column(table: pd.DataFrame, key: str, where: str, hint: str) -> np.ndarray:
    """`table[key]` normalised (E701 when there is no such column)."""
    require_column(table, key, where, hint)
    return normalise(table[key])


def check_classes(values: np.ndarray, key: str, where: str, need: int, purpose: str, fix: str) -> Counter[str]:
    """The class counts of normalised `values`; E702 fewer than two classes, E703 a class with fewer than `need`
    cells (`purpose` says what needs them, `fix` what to do)."""
    counts = Counter(v for v in values if v is not None)
    if len(counts) < 2:
        only = f"one class only ({next(iter(counts))!r}, {sum(counts.values())} cells)" if counts else "no labels"
        raise ConfigError(
            "E702", f"label column {key!r} of {where} has {only}; a classifier needs at least two classes",
            f"give {where} at least two labelled classes in that column, or pick another label column "
            "(unlabelled: empty, NaN, 'unknown', 'nan', 'none')",
        )  # fmt: skip
    small = sorted((n, name) for name, n in counts.items() if n < need)
    if small:
        listed = ", ".join(f"{name!r} ({n} cells)" for n, name in small[:10])
        raise ConfigError(
            "E703", f"class(es) too small for {purpose} in label column {key!r} of {where}: {listed}; each class "
            f"needs at least {need} cells", fix,
        )  # fmt: skip
    return counts
