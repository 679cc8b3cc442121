"""Helix-mRNA fine-tuning: helical.models.helix_mrna.HelixmRNAFineTuningModel on the records of a FASTA or table
(labels: a table column). Every record is tokenised to one length (models.finetuning.SequenceFineTune); helical's
`train` reads the data in order, and the job hands it a dataset shuffled per epoch (seeded). --freeze-layers N
becomes helical's `trainable_layers` = layers - N (helical then freezes the rest of the model, embeddings too)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...spec import Plan
from .. import cache, runner
from ..finetuning import SequenceFineTune, optimizer_factory, trainable_layers
from ..sequence import local_hub_folder
from . import files


class HelixmRNAFineTune(SequenceFineTune):
    family = "helix_mrna"

    def config(self, plan: Plan, device: str, batch_size: int) -> dict[str, Any]:
        tokens = self.tokens(plan)
        return {"batch_size": batch_size, "device": device, "max_length": tokens, "tokens": tokens}

    def build(self, config: dict[str, Any], n_classes: int) -> Any:
        from helical.models.helix_mrna import HelixmRNAConfig, HelixmRNAFineTuningModel

        given = dict(config)
        tokens = given.pop("tokens")
        helix_config = HelixmRNAConfig(**given)
        helix_config.config["model_name"] = local_hub_folder(cache.models_dir(runner.helical_prefix()) /
                                                             files.folder())  # fmt: skip
        model = HelixmRNAFineTuningModel(helix_config, "classification", output_size=n_classes)
        model.model.config.use_cache = False
        model.ha_tokens = int(tokens)
        return model

    def check_params(self, model: Any, freeze_layers: int) -> None:
        trainable_layers(model, model.model.layers, freeze_layers, self.family)

    def train_epoch(self, model: Any, dataset: Any, labels: np.ndarray, optimizer: Any, loss: Any,
                    freeze_layers: int) -> None:  # fmt: skip
        model.train(
            train_dataset=dataset.select_columns(self.columns()),
            train_labels=labels,
            optimizer=optimizer_factory(optimizer),
            optimizer_params={},
            loss_function=loss,
            epochs=1,
            trainable_layers=trainable_layers(model, model.model.layers, freeze_layers, self.family),
        )
