"""The modality layer: one interface (base.Modality) and its implementations, looked up once.

- cells (`.h5ad`, modality/cells.py): single-cell RNA counts;
- records (FASTA / CSV / TSV / Parquet, modality/records.py): nucleotide sequences.

A model's resource profile names what it reads (`ModelSpec.profile.modality`: "rna" and "dna" are cells,
"dna_sequence" and "rna_sequence" records); a validated input says what its rows are (`InputSummary.unit`); a file
name says what it holds (`for_path`, by suffix). pipeline, store, quality, report, telemetry, embed, airflow_tasks
and the watcher call the interface and never branch on the modality themselves.
"""

from __future__ import annotations

from pathlib import Path

from ..models.profiles import SEQUENCE_MODALITIES, ModelSpec
from ..spec import InputSummary
from .base import Baseline, Extra, Modality, QCSection
from .cells import CELLS
from .records import RECORDS

__all__ = ["MODALITIES", "Baseline", "Extra", "Modality", "QCSection", "dataset_name", "for_model", "for_path",
           "of", "suffixes"]  # fmt: skip

#: name (= the unit of its rows) -> implementation
MODALITIES: dict[str, Modality] = {m.name: m for m in (CELLS, RECORDS)}
#: a profile's modality -> the input modality's name
BY_PROFILE: dict[str, str] = {"rna": "cells", "dna": "cells", **{m: "records" for m in SEQUENCE_MODALITIES}}


def of(summary: InputSummary) -> Modality:
    """The modality of a validated input (a plan's `input`)."""
    return MODALITIES[summary.unit]


def for_model(spec: ModelSpec) -> Modality:
    """The modality a model reads."""
    return MODALITIES[BY_PROFILE[spec.profile.modality]]


def for_path(path: str | Path) -> Modality:
    """The modality a file name belongs to; cells for any name no modality claims (its validation then says what
    is wrong: E102 not HDF5)."""
    return next((m for m in MODALITIES.values() if m.accepts(path)), MODALITIES["cells"])


def dataset_name(path: str | Path) -> str:
    """The input's file name less its supported suffix (`sample.h5ad`, `sample.fa.gz` -> `sample`)."""
    return for_path(path).dataset_name(path)


def suffixes() -> tuple[str, ...]:
    """Every input suffix a modality reads (lower case), e.g. for the incoming-folder watcher."""
    return tuple(s for m in MODALITIES.values() for s in m.suffixes)
