"""Geneformer fine-tuning: helical.models.geneformer.GeneformerFineTuningModel; its `process_data` returns an Arrow
`datasets.Dataset` already (tokens on disk as they are)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...spec import Plan
from ..finetuning import CellFineTune, optimizer_factory


class GeneformerFineTune(CellFineTune):
    family = "geneformer"
    canonical = False  # the file's columns, as Geneformer's fine-tuning has read them since it was written

    def config(self, plan: Plan, device: str, batch_size: int) -> dict[str, Any]:
        return {"model_name": plan.helical_model_name, "batch_size": batch_size, "device": device, "emb_mode": "cell"}

    def build(self, config: dict[str, Any], n_classes: int) -> Any:
        from helical.models.geneformer import GeneformerConfig, GeneformerFineTuningModel

        model = GeneformerFineTuningModel(GeneformerConfig(**config), "classification", output_size=n_classes)
        # helical sizes the head from the named model's configured embsize (512 for gf-12L-38M), not from the
        # loaded weights: the same with real weights, wrong for the fixture's tiny model (hidden size 32)
        hidden = int(model.model.config.hidden_size)
        if hidden != model.config["embsize"]:
            model.fine_tuning_head.set_dim_size(hidden)
        return model

    def tokenise(self, model: Any, data: Any) -> Any:
        return model.process_data(data, gene_names="index")

    def check_params(self, model: Any, freeze_layers: int) -> None:
        pass  # helical's train(freeze_layers=N) freezes the first N encoder layers

    def train_epoch(self, model: Any, dataset: Any, labels: np.ndarray, optimizer: Any, loss: Any,
                    freeze_layers: int) -> None:  # fmt: skip
        model.train(
            train_dataset=dataset, optimizer=optimizer_factory(optimizer), optimizer_params={}, loss_function=loss,
            label="label", epochs=1, freeze_layers=freeze_layers, validation_dataset=None, silent=True,
        )  # fmt: skip

    def logits(self, model: Any, dataset: Any) -> np.ndarray:
        return np.asarray(model.get_outputs(dataset, silent=True), dtype=np.float32)
