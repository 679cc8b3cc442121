"""Mamba2-mRNA fine-tuning: helical.models.mamba2_mrna.Mamba2mRNAFineTuningModel on the records of a FASTA or table
(labels: a table column); the shared recipe is models.finetuning.HubSequenceFineTune."""

from __future__ import annotations

from typing import Any

from ..finetuning import HubSequenceFineTune
from . import files


class Mamba2mRNAFineTune(HubSequenceFineTune):
    family = "mamba2_mrna"
    train_options = {"shuffle": False}  # noqa: RUF012 (read only)

    def helical_classes(self) -> tuple[Any, Any]:
        from helical.models.mamba2_mrna import Mamba2mRNAConfig, Mamba2mRNAFineTuningModel

        return Mamba2mRNAConfig, Mamba2mRNAFineTuningModel

    def weights_folder(self) -> str:
        return files.folder()
