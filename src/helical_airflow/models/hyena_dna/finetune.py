"""HyenaDNA fine-tuning: helical.models.hyena_dna.HyenaDNAFineTuningModel on the records of a FASTA or table (labels:
a table column). Every record is tokenised to one length (models.finetuning.SequenceFineTune); helical's `train`
is called with shuffle=False on a dataset the job has shuffled (seeded per epoch)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...spec import Plan
from ..finetuning import SequenceFineTune, optimizer_factory


class HyenaDNAFineTune(SequenceFineTune):
    family = "hyena_dna"
    specials = 2  # the tokenizer's [CLS] and [SEP] (helical's process_data adds 2 to the longest sequence)
    special_tokens_mask = False  # helical's collator reads input_ids only

    def config(self, plan: Plan, device: str, batch_size: int) -> dict[str, Any]:
        return {"model_name": plan.helical_model_name, "batch_size": batch_size, "device": device,
                "tokens": self.tokens(plan)}  # fmt: skip

    def build(self, config: dict[str, Any], n_classes: int) -> Any:
        from helical.models.hyena_dna import HyenaDNAConfig, HyenaDNAFineTuningModel

        given = dict(config)
        tokens = given.pop("tokens")
        model = HyenaDNAFineTuningModel(HyenaDNAConfig(**given), "classification", output_size=n_classes)
        model.ha_tokens = int(tokens)
        return model

    def train_epoch(self, model: Any, dataset: Any, labels: np.ndarray, optimizer: Any, loss: Any,
                    freeze_layers: int) -> None:  # fmt: skip
        model.train(train_dataset=dataset.select_columns(self.columns()), train_labels=labels,
                    optimizer=optimizer_factory(optimizer), optimizer_params={}, loss_function=loss, epochs=1,
                    shuffle=False)  # fmt: skip
