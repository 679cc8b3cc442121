"""The data every model entry is made of: a ModelSpec (names, width, description) and its ResourceProfile.

Plain pydantic data with keyword arguments, written in each family's folder (`models/<family>/__init__.py`)
and collected by `models/registry.py`. Naming scheme: a family name (`geneformer`, `uce`, ...) stands for
that family's default model; every other name is helical's own model name, verbatim (`gf-6L-10M-i2048`,
`4layer_model`, `tf_sapiens`, ...). No name contains a slash, so it is safe in file names and as an `obsm`
key. This module imports neither helical nor torch: the Airflow scheduler reads it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from ..spec import Engine, Precision, PrecisionThresholds, QualityThresholds

#: "rna": single-cell expression (.h5ad); "dna_sequence" / "rna_sequence": nucleotide sequences (FASTA or tables,
#: seqio.py) over the alphabet ACGTN / ACGUN
Modality = Literal["rna", "dna", "dna_sequence", "rna_sequence"]
SEQUENCE_MODALITIES: tuple[Modality, ...] = ("dna_sequence", "rna_sequence")


class ResourceProfile(BaseModel):
    """What a model needs to run; drives the queue, pool, precision and batch size of its shards."""

    model_config = ConfigDict(frozen=True)

    modality: Modality = "rna"
    gpu: Literal["optional", "required"]
    precision: Precision  # default on GPU; CPU runs fp32 (bf16 when asked for by name)
    batch_size: int  # cells per forward pass
    memory_cap_gb: float  # host memory a shard process may use (container / pod limit)
    queue: Literal["default", "gpu"]
    pool: str  # Airflow pool the shard tasks draw from
    engine: Engine = "helical"  # "fast" where a fast path exists (docs/fast_path.md): same embeddings, faster
    quality: QualityThresholds | None = None  # label-score floors of the quality gate (quality.py); None: record only
    # floors on an fp16/bf16 run's agreement with fp32 (agreement.py); None: agreement.DEFAULT_THRESHOLDS (measured)
    agreement: PrecisionThresholds | None = None


def any_device(precision: Precision, batch_size: int, memory_cap_gb: float,
               engine: Engine = "helical") -> ResourceProfile:  # fmt: skip
    """Runs on a CPU or a GPU; shards go to the default queue."""
    return ResourceProfile(
        gpu="optional", precision=precision, batch_size=batch_size, memory_cap_gb=memory_cap_gb,
        queue="default", pool="default_pool", engine=engine,
    )  # fmt: skip


def gpu_only(precision: Precision, batch_size: int, memory_cap_gb: float,
             engine: Engine = "helical") -> ResourceProfile:  # fmt: skip
    """Needs a GPU (too large for a CPU in useful time, or CUDA-only kernels); shards go to the gpu queue."""
    return ResourceProfile(
        gpu="required", precision=precision, batch_size=batch_size, memory_cap_gb=memory_cap_gb,
        queue="gpu", pool="gpu_pool", engine=engine,
    )  # fmt: skip


class ModelSpec(BaseModel):
    """One model users may name: the helical model behind it and its profile."""

    model_config = ConfigDict(frozen=True)

    name: str
    family: str  # a key of models.registry.FAMILIES
    helical_model_name: str
    embedding_dim: int  # of the real model (fixtures are smaller; ask the runner)
    profile: ResourceProfile
    description: str
    max_length: int | None = None  # sequence models: the context, in nucleotides (None: single-cell models)

    @property
    def is_sequence(self) -> bool:
        return self.profile.modality in SEQUENCE_MODALITIES


class ModelOption(BaseModel):
    """A model setting that changes the embedding (species, technology, ...): a run parameter and part of
    the run key. `--option NAME=VALUE` on the CLI, the `model_options` Param in the DAG."""

    model_config = ConfigDict(frozen=True)

    name: str
    default: str
    choices: tuple[str, ...] = ()  # empty: any string
    help: str
