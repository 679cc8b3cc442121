"""Records: nucleotide sequences in FASTA (.fa/.fasta/.fna, gzip too) or tables (.csv/.tsv/.parquet), seqio.py.

The outputs of a sequence run sit in the same run folder as a single-cell run's (store.merge, quality.quality_gate
and report.write_report call this modality where a row's kind matters):

- `embeddings.h5ad`: one row per record in input order (obs: id, length, the table's other columns),
  `obsm["X_<family>"]`; `embeddings.parquet`: id + one float32 list column `embedding`, for users outside AnnData;
- `manifest.json`: input sha256 and its sequence summary with the too-long policy, model, weights checksums,
  parameters, per-shard timings;
- `quality.json`: finite rows, norms, collapse and duplicate checks, label scores of the embeddings when a label
  column is given or found, checked against the thresholds that apply (no PCA-of-counts baseline: a sequence has
  no counts, so only the thresholds that need no baseline can fail the gate);
- `report.html`: the same report, with a length histogram in place of the counts QC.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import figures, seqio
from ..models.profiles import ModelSpec
from ..spec import InputSummary, Plan, ShardResult
from .base import Baseline, Extra, QCSection

#: every name a sequence input may end in (lower case), longest first so `x.fa.gz` loses `.fa.gz`, not `.gz`
SUFFIXES = (
    *(f"{s}.gz" for s in seqio.FASTA_SUFFIXES), *seqio.FASTA_SUFFIXES, *seqio.TABLE_SUFFIXES,
)  # fmt: skip
NO_BASELINE = "none: sequence inputs have no counts to compare with"


class Records:
    name: str = "records"
    unit: str = "records"
    suffixes: tuple[str, ...] = SUFFIXES
    label_fix: str = "pass a column of categories, or omit it"
    umap: bool = False
    no_umap_note: str = "UMAP left out for sequence inputs."
    metrics: tuple[str, ...] = ("sequences", "nucleotides", "nucleotides_per_second")

    def accepts(self, path: str | Path) -> bool:
        return str(path).lower().endswith(self.suffixes)

    def dataset_name(self, path: str | Path) -> str:
        name = Path(path).name
        suffix = next((s for s in self.suffixes if name.lower().endswith(s)), "")
        return name[: len(name) - len(suffix)] if suffix and len(suffix) < len(name) else name

    def validate(
        self, path: str, spec: ModelSpec, options: Mapping[str, str], layer: str | None, cache_dir: str | None,
        data_root: Path | None,
    ) -> InputSummary:  # fmt: skip
        return seqio.validate_sequences(path, spec, options, cache_dir, data_root)

    def describe(self, summary: InputSummary) -> str:
        seq = summary.sequence
        assert seq is not None
        return f"{summary.path}: {summary.n_cells} records, {seq.total_nucleotides} nucleotides ({seq.format})"

    def read_shard(self, summary: InputSummary, start: int, stop: int, layer: str | None) -> Any:
        return seqio.read_records(summary, start, stop)

    def take(self, rows: Any, positions: np.ndarray) -> Any:
        return [rows[int(i)] for i in positions]

    def metadata(self, summary: InputSummary) -> pd.DataFrame:
        return seqio.read_obs(summary)

    def label_table(self, path: str | Path) -> pd.DataFrame | None:
        return None  # the records' columns are known after validation: the gate checks the label (E402)

    def label_columns(self, table: pd.DataFrame) -> pd.DataFrame:
        return table.drop(columns=["id", "length"])

    def merge_extras(self, table: pd.DataFrame, embeddings: Callable[[], np.ndarray]) -> dict[str, Extra]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        matrix = embeddings()  # embeddings.parquet is written from the whole matrix (one Arrow table)
        dim = matrix.shape[1]
        vectors = pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1), type=pa.float32()), dim)
        arrow = pa.table({"id": pa.array(table["id"].astype(str).tolist()), "embedding": vectors})
        return {"parquet": ("embeddings.parquet", lambda tmp: pq.write_table(arrow, tmp))}

    def baseline(self, plan: Plan, rows: np.ndarray) -> Baseline:
        return Baseline(None, NO_BASELINE)

    def qc_section(self, plan: Plan, qc: np.ndarray | None) -> QCSection:
        seq = plan.input.sequence
        assert seq is not None
        table = figures.table([
            ("records", f"{plan.input.n_cells:,} ({seq.format}{', gzip' if seq.compressed else ''})"),
            ("nucleotides", f"{seq.total_nucleotides:,} (lengths {seq.min_length:,}..{seq.max_length:,})"),
            ("alphabet", seq.alphabet + (f" (read {', '.join(f'{a} as {b}' for a, b in seq.read_as.items())} in "
                                         f"{seq.n_read_as:,} records)" if seq.read_as else "")),
            ("model context", f"{seq.context:,}; longer records: {seq.n_too_long} ({seq.too_long})"),
            ("soft-masked records (upper-cased)", str(seq.n_soft_masked)),
        ])  # fmt: skip
        return QCSection(table, length_picture(self.metadata(plan.input)["length"].to_numpy()), "record lengths")

    def shard_metrics(self, summary: InputSummary, result: ShardResult) -> list[tuple[str, float, str]]:
        """Records and nucleotides (from the record index)."""
        nt = seqio.nucleotides(summary, result.start, result.stop)
        metrics: list[tuple[str, float, str]] = [("sequences", result.cells, "c"), ("nucleotides", nt, "c")]
        if result.seconds > 0:
            metrics.append(("nucleotides_per_second", nt / result.seconds, "g"))
        return metrics


def length_picture(lengths: np.ndarray) -> str:
    plt = figures.pyplot()
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.hist(lengths, bins=min(50, max(5, len(lengths) // 5)))
    ax.set_xlabel("record length (nucleotides)")
    ax.set_ylabel("records")
    return figures.png(fig)


RECORDS = Records()
