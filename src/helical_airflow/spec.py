"""Typed inputs and outputs of every step, shared by the CLI, the DAG and the launchers.

Each model serialises to JSON, so a step can run in another process or container and hand its
result back as a file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Device = Literal["cpu", "cuda", "auto"]
Precision = Literal["fp32", "fp16", "bf16"]
Engine = Literal["helical", "fast"]
XFormat = Literal["csr", "csc", "dense"]
GeneIdKind = Literal["ensembl", "symbol"]
#: what a sequence model does with a record longer than its context (the `too_long` model option, models/sequence.py)
TooLong = Literal["error", "truncate", "window"]
#: the model a run takes when none is named (the CLI's --model, the DAG's `model` Param)
DEFAULT_MODEL = "geneformer"


class RunParams(BaseModel):
    """What the user asked for. None means: take it from the model's resource profile."""

    model: str
    shard_size: int = Field(default=1000, ge=1, description="cells per shard")
    device: Device = "auto"
    precision: Precision | None = None
    batch_size: int | None = Field(default=None, ge=1)
    layer: str | None = Field(default=None, description="layer holding raw counts; default X")
    engine: Engine | None = None
    seed: int = Field(default=0, ge=0, le=2**32 - 1, description="numpy's seeds are 32-bit")
    options: dict[str, str] = Field(
        default_factory=dict, description="model options that change the embedding (species, ...): docs/models.md"
    )
    cache_dir: str | None = Field(default=None, description="weights cache root (helical's CACHE_DIR_HELICAL_PREFIX)")
    memory_cap_gb: float | None = Field(
        default=None, gt=0, description="memory one embed process may use, GB; past it E305 and the retry halves "
        "the batch (default: the model's resource profile)",
    )  # fmt: skip
    agreement_cells: int = Field(
        default=256, ge=2, le=100_000, description="cells (records) of an fp16/bf16 run re-embedded in fp32 to "
        "measure their agreement (all of them when fewer): agreement.py",
    )  # fmt: skip


def schema_of(field: str) -> dict[str, Any]:
    """RunParams' JSON schema of one field, `null` left out of an optional one: its bounds and choices, written once
    (the CLI's options and the DAG's Params read them here)."""
    schema = dict(RunParams.model_json_schema()["properties"][field])
    for option in schema.pop("anyOf", []):
        if option.get("type") != "null":
            schema.update(option)
    return schema


class ResolvedParams(RunParams):
    """RunParams after planning (plan.resolve_params, the one place defaults are filled): nothing left to choose.

    Every later step (embed, merge, report, MLflow) reads these; precision is the one asked for on a GPU (a CPU
    shard runs fp32 and its ShardResult says so)."""

    precision: Precision
    batch_size: int = Field(ge=1)
    engine: Engine
    memory_cap_gb: float = Field(gt=0)
    # what a CPU shard runs: bf16 only when asked for by name (--precision bf16; torch autocasts bf16 on a CPU),
    # else fp32, whatever the profile's GPU precision (fp16 on a CPU is slow and torch's CPU kernels for it are few)
    cpu_precision: Literal["fp32", "bf16"] = "fp32"


class SequenceSummary(BaseModel):
    """What validation learned about a sequence input (FASTA or table; seqio.py), in one streaming pass."""

    format: Literal["fasta", "csv", "tsv", "parquet"]
    compressed: bool  # gzip
    id_column: str | None  # tables only
    sequence_column: str | None
    extra_columns: list[str] = Field(default_factory=list)  # other table columns, kept in obs
    alphabet: str  # "ACGTN" or "ACGUN"
    context: int  # the model's context in nucleotides
    too_long: TooLong
    n_too_long: int  # records longer than the context (truncated or windowed as `too_long` says)
    n_soft_masked: int  # records with lower-case letters (upper-cased)
    # letters of the file the model reads as others, e.g. {"T": "U"}: an RNA model given DNA letters reads T as U,
    # as helical's RNA tokenizers do (seqio.READ_AS); empty when the file is in the model's own letters
    read_as: dict[str, str] = Field(default_factory=dict)
    n_read_as: int = 0  # records holding such letters
    nucleotides_read_as: int = 0  # such letters, over all records
    total_nucleotides: int
    min_length: int
    max_length: int
    index_file: str  # record offsets / row groups, cached by the input's sha256


class InputSummary(BaseModel):
    """What validation learned about the input file, without loading X whole. For a sequence input: n_cells is
    the number of records, n_genes 0, and `sequence` says the rest."""

    path: str
    sha256: str
    size_bytes: int
    n_cells: int
    n_genes: int
    x_source: str  # "X" or "layers/<name>"
    x_format: XFormat
    dtype: str
    gene_id_kind: GeneIdKind
    genes_in_vocab: int
    vocab_overlap: float  # fraction of the file's genes the model knows
    sequence: SequenceSummary | None = None  # sequence inputs only
    #: the object storage URL `path` is a verified local copy of (objstore.stage); None for a local input
    source: str | None = None

    @property
    def unit(self) -> str:
        """What a row is, for messages: "records" for a sequence input, "cells" for an .h5ad (the fields keep their
        cell names, e.g. n_cells, ShardSpec.cells, Manifest.total_cells: they count records for sequence inputs)."""
        return "records" if self.sequence is not None else "cells"


class ShardSpec(BaseModel):
    index: int
    start: int  # first row, inclusive
    stop: int  # last row, exclusive

    @property
    def cells(self) -> int:
        return self.stop - self.start


class Plan(BaseModel):
    """Everything a launcher needs to embed any shard: written once as plan.json."""

    run_key: str
    dataset: str
    out_dir: str
    input: InputSummary
    params: ResolvedParams
    model_family: str
    helical_model_name: str
    fixture: bool
    weights_checksum: str
    weights_files: dict[str, str] = Field(default_factory=dict)  # each model file (cache-relative) -> sha256
    code_version: str
    shards: list[ShardSpec]
    created_at: str

    @property
    def out_path(self) -> Path:
        return Path(self.out_dir)

    def shard_file(self, index: int) -> Path:
        return self.out_path / "shards" / f"{index}.npy"

    def shard_result_file(self, index: int) -> Path:
        return self.out_path / "shards" / f"{index}.json"

    @property
    def plan_file(self) -> Path:
        return self.out_path / "plan.json"


class ShardResult(BaseModel):
    """Written next to shards/<i>.npy once the shard is complete."""

    index: int
    start: int
    stop: int
    cells: int
    embedding_dim: int
    seconds: float
    model_load_seconds: float
    peak_rss_mb: float
    peak_gpu_mb: float | None = None
    device: str
    #: the GPU the shard ran on, its id as `nvidia-smi -L` numbers it (the launcher's lease, gpus.py); None on a CPU
    #: (and in shards written before this was recorded)
    gpu: str | None = None
    precision: Precision
    engine: Engine
    batch_size: int | None = None  # cells per forward pass, as run (None: written before this was recorded)
    host: str
    finished_at: str
    reused: bool = False
    # the genes the model saw (models.vocab.CanonicalGenes: the known input genes as its own ids, sorted): sha256 of
    # the list, one id a line, and how many; None for sequence models (and shards written before this was recorded)
    canonical_genes_sha256: str | None = None
    canonical_genes: int | None = None
    # rows of the run's agreement sample (agreement.py) in this shard, re-embedded in fp32 by the process that embedded
    # the shard in fp16/bf16 (shards/<i>.fp32.npy); None: the shard ran in fp32
    agreement_cells: int | None = None


class QualityThresholds(BaseModel):
    """Floors on the label scores; None: recorded, not checked. Per model (ResourceProfile.quality) or for a run
    (HELICAL_AIRFLOW_QUALITY_THRESHOLDS, JSON). The *_drop_vs_pca ones compare with the PCA baseline of the same
    cells: fail when the embedding's score is more than this below the baseline's (0: must not be worse than PCA)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_knn_accuracy: float | None = Field(default=None, ge=0, le=1)
    min_silhouette: float | None = Field(default=None, ge=-1, le=1)
    max_knn_drop_vs_pca: float | None = Field(default=None, ge=0, le=1)
    max_silhouette_drop_vs_pca: float | None = Field(default=None, ge=0, le=2)


class PrecisionThresholds(BaseModel):
    """Floors on the agreement of an fp16/bf16 run with fp32 (agreement.py): per model (ResourceProfile.agreement)
    or for a run (HELICAL_AIRFLOW_PRECISION_THRESHOLDS, JSON). None: recorded, not checked."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_cosine: float | None = Field(default=None, ge=-1, le=1)  # the lowest per-cell cosine of the sample
    min_knn_overlap: float | None = Field(default=None, ge=0, le=1)  # the mean kNN-neighbourhood overlap


class PrecisionAgreement(BaseModel):
    """How far a run in fp16/bf16 is from fp32 on a seeded sample of its rows, re-embedded in fp32 in the same
    processes with the same loaded models (agreement.py)."""

    precision: Precision  # what the run's shards ran in (the reduced one)
    reference: Literal["fp32"] = "fp32"
    sample_cells: int  # rows compared (the sample, less rows without an embedding, e.g. no known gene)
    sample_seed: int
    cosine_min: float  # per-row cosine between the run's embedding and the fp32 one
    cosine_median: float
    knn_k: int  # neighbours per row, within the sample
    knn_overlap: float  # mean over rows of |kNN in the run's embedding & kNN in fp32| / k (cosine distance)
    knn_overlap_min: float
    thresholds: PrecisionThresholds | None = None  # as applied; None: recorded only
    thresholds_source: str
    passed: bool
    problems: list[str] = Field(default_factory=list)


class LabelScores(BaseModel):
    """How well a representation of the cells separates the label: kNN label transfer and silhouette."""

    knn_accuracy: float  # mean accuracy of 5-fold cross-validated k-nearest-neighbour label transfer
    silhouette: float  # mean silhouette width of the labels (-1..1; euclidean)


class QualityReport(BaseModel):
    passed: bool
    n_cells: int
    embedding_dim: int
    all_finite: bool
    shape_ok: bool
    mean_norm: float
    min_std_over_dims: float
    mean_pairwise_cosine: float
    problems: list[str]
    distinct_fraction: float | None = None  # distinct embedding rows / cells (in the cosine sample)
    cosine_sample_cells: int | None = None  # rows in the seeded sample the cosine and distinct fraction use
    score_sample_cells: int | None = None  # rows in the seeded sample the label scores and PCA baseline use
    # the label the scores are computed against, and why that column (or why none)
    label_key: str | None = None
    label_source: Literal["given", "guessed"] | None = None
    label_note: str | None = None
    n_label_categories: int | None = None
    scored_cells: int | None = None  # cells in the scoring sample (after dropping unlabelled / tiny classes)
    embedding_scores: LabelScores | None = None
    pca_scores: LabelScores | None = None  # baseline: PCA of the log-normalised counts of the same cells
    baseline: str | None = None  # how the baseline was made
    thresholds: QualityThresholds | None = None  # as applied; None: scores recorded only
    thresholds_source: str | None = None
    # an fp16/bf16 run's agreement with fp32 (agreement.py); None: the run ran in fp32 (not applicable)
    precision_agreement: PrecisionAgreement | None = None


class Manifest(BaseModel):
    """How the embeddings were made: enough to reproduce or audit them."""

    run_key: str
    dataset: str
    input: InputSummary
    model: str
    model_family: str
    helical_model_name: str
    fixture: bool
    fixture_note: str | None
    weights_checksum: str
    weights_files: dict[str, str] = Field(default_factory=dict)  # each model file (cache-relative) -> sha256
    params: ResolvedParams
    versions: dict[str, str]
    host: dict[str, str]
    shards: list[ShardResult]
    total_cells: int
    total_shard_seconds: float
    max_peak_rss_mb: float
    quality: QualityReport | None = None
    created_at: str
    outputs: dict[str, str]
    tracking: dict[str, str] | None = None
    # the shards' canonical gene list (ShardResult.canonical_genes_sha256), when every shard saw the same one: two
    # layouts of the same cells (column order, symbols or Ensembl ids, versions) give the same hash
    canonical_genes_sha256: str | None = None
    canonical_genes: int | None = None
