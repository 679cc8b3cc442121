"""The modality interface: what the pipeline needs to know about one kind of input, and nothing else branches on.

Two implementations: cells (`.h5ad`, modality/cells.py) and records (FASTA / tables of nucleotide sequences,
modality/records.py); modality/__init__.py looks one up, once, the way models/registry.py looks up a family.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import numpy as np

from ..spec import InputSummary, Plan, ShardResult

if TYPE_CHECKING:
    import pandas as pd

    from ..models.profiles import ModelSpec

#: an extra merged output: (file name in the run folder, a writer that takes the temp path to write)
Extra = tuple[str, Callable[[Path], None]]


class Baseline(NamedTuple):
    """What the quality gate compares the embeddings with, for the sampled rows."""

    features: Callable[[], np.ndarray] | None  # computed when scored, e.g. the PCA of the cells' counts; None: none
    name: str  # what the baseline is, for quality.json ("none: ..." when there is none)
    qc: np.ndarray | None = None  # the input's QC numbers for the report (qc.npy), when the gate has them


class QCSection(NamedTuple):
    """The report's "Input QC": a table (HTML) and a picture (PNG, base64) with its alt text."""

    table: str
    picture: str
    alt: str


class Modality(Protocol):
    """One kind of input: its unit, its files, its checks, its rows and what the report and the gate say of it."""

    name: str  # the registry key: "cells" or "records"
    unit: str  # what a row is, in messages: "cells" or "records"
    suffixes: tuple[str, ...]  # the file names it reads (lower case; longest first where one ends another)
    label_fix: str  # E402's fix: where the label column is looked for
    umap: bool  # whether the report draws a UMAP beside the PCA
    no_umap_note: str  # the report's note where `umap` is False
    metrics: tuple[str, ...]  # the StatsD shard metrics it adds (telemetry.shard_lines)

    def accepts(self, path: str | Path) -> bool:
        """Whether `path` is an input of this kind (by its name)."""
        ...

    def dataset_name(self, path: str | Path) -> str:
        """The input's name without its suffix: the run folder is outputs/<dataset>/<run key>."""
        ...

    def validate(
        self, path: str, spec: ModelSpec, options: Mapping[str, str], layer: str | None, cache_dir: str | None,
        data_root: Path | None,
    ) -> InputSummary:  # fmt: skip
        """Every check of this kind of input; an InputValidationError (E1xx) naming what to fix."""
        ...

    def describe(self, summary: InputSummary) -> str:
        """One log line saying what validation found."""
        ...

    def read_shard(self, summary: InputSummary, start: int, stop: int, layer: str | None) -> Any:
        """Rows [start, stop) in the form the model's runner embeds (an AnnData; a list of seqio.Record)."""
        ...

    def take(self, rows: Any, positions: np.ndarray) -> Any:
        """The rows at `positions` (0-based, ascending) of what read_shard returned, in the same form."""
        ...

    def metadata(self, summary: InputSummary) -> pd.DataFrame:
        """One row of metadata per input row, in order: the merged embeddings.h5ad's obs."""
        ...

    def label_table(self, path: str | Path) -> pd.DataFrame | None:
        """The columns a --label-key is checked against before anything is embedded; None: the gate checks it."""
        ...

    def label_columns(self, table: pd.DataFrame) -> pd.DataFrame:
        """The metadata columns a label may be chosen from (scores.choose_label)."""
        ...

    def merge_extras(self, table: pd.DataFrame, embeddings: Callable[[], np.ndarray]) -> dict[str, Extra]:
        """Outputs beside embeddings.h5ad, keyed by their manifest `outputs` entry (`embeddings()` loads the whole
        matrix: only a modality that writes one calls it; embeddings.h5ad itself is written in row blocks)."""
        ...

    def baseline(self, plan: Plan, rows: np.ndarray) -> Baseline:
        """The quality gate's baseline for the sampled `rows` (and the QC numbers the report shows)."""
        ...

    def qc_section(self, plan: Plan, qc: np.ndarray | None) -> QCSection:
        """The report's input QC; `qc`: what the gate saved (qc.npy), None when it saved nothing."""
        ...

    def shard_metrics(self, summary: InputSummary, result: ShardResult) -> list[tuple[str, float, str]]:
        """Extra StatsD (name, value, kind) for one finished shard, named in `metrics`."""
        ...
