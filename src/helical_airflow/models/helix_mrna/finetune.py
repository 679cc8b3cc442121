"""Helix-mRNA fine-tuning: helical.models.helix_mrna.HelixmRNAFineTuningModel on the records of a FASTA or table
(labels: a table column); the shared recipe is models.finetuning.HubSequenceFineTune."""

from __future__ import annotations

from typing import Any

from ..finetuning import HubSequenceFineTune
from . import files


class HelixmRNAFineTune(HubSequenceFineTune):
    family = "helix_mrna"

    def helical_classes(self) -> tuple[Any, Any]:
        from helical.models.helix_mrna import HelixmRNAConfig, HelixmRNAFineTuningModel

        return HelixmRNAConfig, HelixmRNAFineTuningModel

    def weights_folder(self) -> str:
        return files.folder()

    def adjust(self, model: Any) -> None:
        model.model.config.use_cache = False
