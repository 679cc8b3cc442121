"""The fine-tuning job's contract: what the user chose (FineTuneParams) and what a model folder records
(FineTuneResult, finetune.json), shared by the job (finetune.py) and the registry (finetune_registry.py) so neither
imports the other."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .spec import Device

#: bump when training, the folder layout or finetune.json change: a new key, so old folders are not reused
#: (2: labels.py's rule: stripped text, ""/"unknown"/"nan"/"none" unlabelled, so a messy column has other classes)
FINETUNE_VERSION = 2

ClassWeighting = Literal["balanced", "none"]


class FineTuneParams(BaseModel):
    """What the user chose. Everything but device, shard size and cache location is part of the finetune key."""

    model_config = ConfigDict(extra="forbid")

    model: str
    label_key: str
    epochs: int = Field(default=3, ge=1, le=1000)
    learning_rate: float = Field(default=1e-4, gt=0, le=1)
    freeze_layers: int = Field(default=0, ge=0, description="encoder layers left frozen (from the input side)")
    validation_fraction: float = Field(default=0.2, gt=0, lt=1)
    max_train_cells: int | None = Field(default=None, ge=2, description="stratified subsample of the training split")
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    patience: int = Field(default=2, ge=1, description="early stopping: epochs without a better validation macro F1")
    class_weighting: ClassWeighting = "balanced"
    batch_size: int = Field(default=16, ge=1, description="cells per training step")
    device: Device = "auto"
    shard_size: int = Field(default=1000, ge=1, description="cells tokenised at a time")
    cache_dir: str | None = None

    def keyed(self) -> dict[str, Any]:
        return self.model_dump(exclude={"device", "shard_size", "cache_dir"})


class EpochMetrics(BaseModel):
    epoch: int  # 1-based
    train_loss: float  # mean over the epoch's batches (the loss helical was given: class-weighted when asked)
    val_loss: float  # the same loss on the validation split
    val_accuracy: float
    val_macro_f1: float
    seconds: float
    train_cells_per_second: float


class SplitRecord(BaseModel):
    seed: int
    validation_fraction: float
    stratified: bool = True
    labelled_cells: int
    unlabelled_cells: int
    train_cells: int
    val_cells: int
    train_per_class: dict[str, int]
    val_per_class: dict[str, int]
    capped_by_max_train_cells: bool
    dropped_no_known_gene: dict[str, int]  # cells per split that express no gene of the vocabulary (not tokenised)
    rows_sha256: str  # sha256 of split.json's rows: the exact cells


class ValidationScores(BaseModel):
    """The best epoch's weights on the validation split: what report.html's confusion matrix and table show."""

    labels: list[str]  # rows and columns of the confusion matrix (the label map's order)
    confusion: list[list[int]]  # rows: the true class; columns: the predicted one; sums to the validation cells
    per_class: dict[str, tuple[float, float, float, int]]  # label -> (precision, recall, F1, cells)
    accuracy: float
    macro_f1: float


class FineTuneResult(BaseModel):
    version: int = FINETUNE_VERSION
    finetune_key: str
    family: str
    model: str  # helical-airflow's model name (get_model)
    helical_model_name: str
    weights_checksum: str  # the base model's files (plan.weights_checksum, as in every manifest)
    fixture: bool
    input_path: str
    input_sha256: str
    input_run_key: str  # the embedding run key of the same input and model (outputs/<dataset>/<run_key>/)
    dataset: str
    label_key: str
    labels: list[str]  # class id -> label (the label map)
    params: dict[str, Any]
    head: str = "classification"
    helical_config: dict[str, Any]  # what rebuilds the FineTuningModel (load_classifier)
    split: SplitRecord
    class_weighting: ClassWeighting
    class_weights: list[float]  # per class id; all 1.0 for "none"
    early_stopping: dict[str, Any]  # monitor, patience, best_epoch, stopped_early, epochs_run
    history: list[EpochMetrics]
    best: EpochMetrics
    tokens_on_disk: bool
    device: str
    # the forward passes' dtype while training: fp32 on a CPU; bf16 on a GPU whose profile asks for fp16 or bf16
    # (models.finetuning.training_precision: helical's train() owns backward(), so no fp16 loss scaling)
    training_precision: str = "fp32"
    seconds: float
    created_at: str
    # the base model's gene vocabulary (models.vocab.gene_list_sha256 of its native ids, sorted): a query run whose
    # vocabulary differs cannot be predicted (E832); None in folders written before it was recorded
    vocabulary_sha256: str | None = None
    validation: ValidationScores | None = None  # None in folders written before report.html existed
