"""scGPT fine-tuning: helical.models.scgpt.scGPTFineTuningModel.

helical's `process_data` returns an in-memory torch Dataset (the shard's count matrix); each cell's item (its
non-zero genes' vocabulary ids and counts, `<cls>` first) is written as two Arrow list columns instead, and
training reads them back memory-mapped through `arrow_items`, which rebuilds the very item helical's Dataset
returns: helical's collator (binning, sampling over 1,200 genes with numpy's global generator, in the checkpoint)
sees the same input. helical's `train` reads the data in order (SequentialSampler) with `train_labels` sliced per
batch: the job hands it a shuffled dataset and that order's labels.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...spec import Plan
from .. import cache, runner
from ..finetuning import CellFineTune, arrow_items, items_to_arrow, optimizer_factory
from .adapter import architecture


class ScGPTFineTune(CellFineTune):
    family = "scgpt"

    def config(self, plan: Plan, device: str, batch_size: int) -> dict[str, Any]:
        # the checkpoint's architecture (args.json), as the embedding adapter reads it; recorded in finetune.json
        model_dir = cache.models_dir(runner.helical_prefix()) / "scgpt" / "scGPT_CP"
        return {"batch_size": batch_size, "emb_mode": "cls", "device": device, "binning_seed": plan.params.seed,
                **architecture(model_dir)}  # fmt: skip

    def build(self, config: dict[str, Any], n_classes: int) -> Any:
        from helical.models.scgpt import scGPTConfig, scGPTFineTuningModel

        return scGPTFineTuningModel(scGPTConfig(**config), "classification", output_size=n_classes)

    def tokenise(self, model: Any, data: Any) -> Any:
        dataset = model.process_data(data, gene_names="index")

        def items() -> Any:
            for i in range(len(dataset)):
                item = dataset[i]
                yield {"genes": item["genes"].numpy(), "expressions": item["expressions"].numpy()}

        return items_to_arrow(items())

    def _items(self, dataset: Any) -> Any:
        import torch

        table = dataset.with_format("numpy", columns=["genes", "expressions"])

        def make(row: dict[str, Any], i: int) -> dict[str, Any]:
            return {"id": i, "genes": torch.from_numpy(np.asarray(row["genes"], dtype=np.int64)),
                    "expressions": torch.from_numpy(np.asarray(row["expressions"], dtype=np.float32))}  # fmt: skip

        return arrow_items(table, make)

    def train_epoch(self, model: Any, dataset: Any, labels: np.ndarray, optimizer: Any, loss: Any,
                    freeze_layers: int) -> None:  # fmt: skip
        model.train(train_input_data=self._items(dataset), train_labels=labels, optimizer=optimizer_factory(optimizer),
                    optimizer_params={}, loss_function=loss, epochs=1)  # fmt: skip

    def logits(self, model: Any, dataset: Any) -> np.ndarray:
        return np.asarray(model.get_outputs(self._items(dataset)), dtype=np.float32)
