"""TranscriptFormer through helical: `TranscriptFormer.process_data` then `get_embeddings`, one shard at a time.

Per-cell by construction: helical's `process_batch` keeps each cell's expressed genes in column order (no
sampling, `randomize_genes` off), pads every cell to the model's full sequence length, and `inference` pads each
batch to the configured batch size with empty rows; the cell embedding (`mean_embeddings`) is the sum over the
cell's own non-padding positions divided by that fixed length. No cell is filtered out (min_expressed_genes 0,
filter_outliers 0), so rows come back in input order. What the adapter does about helical's habits:
- `TranscriptFormerConfig` hard-codes `inference_config.device = "cuda"` and `get_embeddings` moves the model
  there: the adapter sets the run's device in helical's config before the model is built;
- `inference_config.output_path` is `./inference_results`: each call gets its own temporary folder, and runs with
  it as the working directory, so nothing lands in (or is shared through) the caller's directory;
- the `species` option picks the vocab file of the cells' species. A species the checkpoint was trained on (its
  config.json's `esm2_mappings`) is already in helical's gene vocabulary; any other species the model has a file
  for is passed as `pretrained_embedding_species` and helical swaps the gene embedding layer, with code that
  hard-codes CUDA (model_dir/embedding_surgery.py:39): that fails with E228 on a CPU, before helical loads;
- the `assay` option is the aux token helical reads from `obs["assay"]` ("unknown" when absent), checked
  against the model's assay_vocab.json;
- gene order: helical's `process_batch` (sort_genes off) takes each cell's expressed genes in column order, cut to
  the model's sequence length, and the model reads that order (min per-cell cosine 0.956 between the sample and a
  permuted copy with Ensembl ids, issue 22). The base class's canonical_input hands over the vocabulary's Ensembl ids
  without version (helical looks ids up verbatim), sorted, unknown genes left out: the order, and which genes a cell
  longer than the sequence keeps, no longer depend on the file's layout;
- the DataLoader runs in-process.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import shutil
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from ... import settings
from ...errors import ConfigError
from .. import cache
from ..runner import HelicalRunner, private_workdir
from . import files

if TYPE_CHECKING:
    import anndata

log = logging.getLogger(__name__)


@contextlib.contextmanager
def block_masks_on(device: str) -> Iterator[None]:
    """helical's forward builds its flex-attention block mask with `create_block_mask(...)` and no `device`; torch
    then picks `torch.accelerator.current_accelerator()`, the accelerator torch was *built* for: "cuda" with a
    CUDA wheel even on a host without a GPU, or on a GPU host running --device cpu, and the CPU forward fails
    ("found two different devices cuda:0, cpu"). While helical runs, its module's `create_block_mask` gets the
    run's device; nothing else changes."""
    from helical.models.transcriptformer.model_dir import model as tf_model

    original = tf_model.create_block_mask
    tf_model.create_block_mask = functools.partial(original, device=device)
    try:
        yield
    finally:
        tf_model.create_block_mask = original


def autocast(device: str, precision: str) -> Any:
    """helical runs TranscriptFormer without autocast (fp32); on a GPU the profile's precision applies."""
    import torch

    if device == "cpu" or precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype={"fp16": torch.float16, "bf16": torch.bfloat16}[precision])


def require_cpp_compiler(name: str) -> None:
    """helical's layers wrap flex attention in torch.compile (model_dir/layers.py:55) and build block masks with
    `_compile=True` (model_dir/model.py:325); on a CPU, inductor compiles them with a C++ compiler. Without one
    the first batch fails deep in torch ("InvalidCxxCompiler: No working C++ compiler found"): say so first."""
    wanted = settings.get().cxx
    if not shutil.which(wanted):
        raise ConfigError(
            "E228",
            f"{name!r} cannot run on this CPU host: helical compiles TranscriptFormer's flex attention with "
            f"torch.compile, which needs a C++ compiler on a CPU, and {wanted!r} is not on PATH",
            "install one (apt-get install g++) or set CXX, or run on a CUDA GPU (--device cuda)",
        )


class TranscriptFormerRunner(HelicalRunner):
    def load_model(self) -> Any:
        model_name = self.spec.helical_model_name
        models_dir = cache.models_dir(self.cache_dir)
        self.species = files.species_of(model_name, self.options)
        self.out_of_distribution = self.species not in files.trained_species(models_dir, model_name)
        if self.out_of_distribution and self.device == "cpu":
            raise ConfigError(
                "E228",
                f"{self.spec.name!r} was not trained on {self.species}: helical swaps in that species' gene "
                "embeddings with code that hard-codes CUDA (helical/models/transcriptformer/model_dir/"
                "embedding_surgery.py:39), so this cannot run on a CPU",
                "run it on a CUDA GPU (--device cuda), or pick a species the model was trained on",
            )
        if self.device == "cpu":
            require_cpp_compiler(self.spec.name)
        self.assay = self.options.get("assay", "unknown")
        files.check_assay(models_dir, model_name, self.assay)

        from helical.models.transcriptformer import TranscriptFormer, TranscriptFormerConfig

        with private_workdir("transcriptformer") as tmp:
            config = TranscriptFormerConfig(
                model_name=model_name, batch_size=self.batch_size, emb_mode="cell", output_path=tmp,
                pretrained_embedding_species=self.species if self.out_of_distribution else None,
            )  # fmt: skip
            config.config.model.inference_config.device = self.device  # helical hard-codes "cuda"
            model = TranscriptFormer(config)
        model.model.data_config.n_data_workers = 0  # the shard is in memory: no forked DataLoader worker
        model.model.to(self.device)
        return model

    @property
    def embedding_dim(self) -> int:
        return int(self.model.model.model_config.embed_dim)

    def _embed_helical(self, data: anndata.AnnData) -> np.ndarray:
        import torch

        data.obs["assay"] = self.assay
        with private_workdir("transcriptformer") as tmp:
            self.model.config.model.inference_config.output_path = tmp
            self.model.model.inference_config.output_path = tmp
            dataset = self.model.process_data([data])
            with torch.no_grad(), block_masks_on(self.device), autocast(self.device, self.precision):
                embeddings = self.model.get_embeddings(dataset)
        return np.asarray(embeddings.float().cpu().numpy(), dtype=np.float32)
