"""UCE fine-tuning: helical.models.uce.UCEFineTuningModel.

helical's `process_data` writes the shard's counts to a file in the working directory and returns a UCEDataset
reading it; each cell's item (its cell sentence and mask, sampled by helical with a fixed-seed generator per cell:
the same every epoch) is written as Arrow columns instead, and training reads them back memory-mapped through
`arrow_items`, which returns helical's item tuple to helical's own collator. `train` reads in order
(shuffle=False) with `train_labels` sliced per batch: the job hands it a shuffled dataset and that order's labels.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import scipy.sparse as sp

from ...spec import Plan
from .. import cache, registry, runner
from ..finetuning import CellFineTune, arrow_items, items_to_arrow, optimizer_factory
from ..runner import private_workdir
from . import files
from .adapter import CONFIG_KEYS


class UCEFineTune(CellFineTune):
    family = "uce"

    def config(self, plan: Plan, device: str, batch_size: int) -> dict[str, Any]:
        spec = registry.get_model(plan.params.model)
        options = registry.resolve_options(spec, plan.params.options)
        name = spec.helical_model_name
        args_path = cache.models_dir(runner.helical_prefix()) / files.args_file(name)
        args = json.loads(args_path.read_text()) if args_path.is_file() else {}
        config: dict[str, Any] = {
            "model_name": name, "batch_size": batch_size, "species": options["species"],
            "device": "cuda" if device.startswith("cuda") else "cpu",
            **{k: int(args[k]) for k in CONFIG_KEYS if k in args},
        }  # fmt: skip
        if "n_layers" in args:
            config["n_layers"] = int(args["n_layers"])
        return config

    def build(self, config: dict[str, Any], n_classes: int) -> Any:
        from helical.models.uce import UCEConfig, UCEFineTuningModel

        given = dict(config)
        n_layers = given.pop("n_layers", None)
        uce_config = UCEConfig(**given)
        if n_layers is not None:
            uce_config.config["n_layers"] = int(n_layers)
        return UCEFineTuningModel(uce_config, "classification", output_size=n_classes)

    def tokenise(self, model: Any, data: Any) -> Any:
        if not sp.isspmatrix_csr(data.X):
            data.X = sp.csr_matrix(data.X)  # helical calls X.toarray()
        with private_workdir("uce-finetune"):
            dataset = model.process_data(data, gene_names="index", name="shard")
            rows = []
            for i in range(len(dataset)):
                sentence, mask, _, length, _ = dataset[i]
                rows.append({"sentence": sentence.numpy().ravel().astype(np.int32),
                             "mask": mask.numpy().ravel().astype(np.int8), "length": int(length)})  # fmt: skip
        return items_to_arrow(iter(rows))

    def _items(self, model: Any, dataset: Any) -> Any:
        import torch
        from helical.models.uce.uce_collator import UCECollator

        table = dataset.with_format("numpy", columns=["sentence", "mask", "length"])

        def make(row: dict[str, Any], i: int) -> Any:
            sentence = torch.from_numpy(np.asarray(row["sentence"], dtype=np.float32))[None, :]
            mask = torch.from_numpy(np.asarray(row["mask"], dtype=np.float32))[None, :]
            return sentence, mask, i, int(row["length"]), torch.zeros_like(sentence)

        return arrow_items(table, make, UCECollator(model.config))

    def train_epoch(self, model: Any, dataset: Any, labels: np.ndarray, optimizer: Any, loss: Any,
                    freeze_layers: int) -> None:  # fmt: skip
        model.train(
            train_input_data=self._items(model, dataset),
            train_labels=labels,
            optimizer=optimizer_factory(optimizer),
            optimizer_params={},
            loss_function=loss,
            epochs=1,
        )

    def logits(self, model: Any, dataset: Any) -> np.ndarray:
        return np.asarray(model.get_outputs(self._items(model, dataset)), dtype=np.float32)
