"""What fine-tuning needs from a family: helical's `*FineTuningModel`, built, fed tokens, trained an epoch, asked for
logits. One subclass per family lives in its folder (`models/<family>/finetune.py`), named by `ModelFamily.finetune`
like the adapter is; `finetune.py` (the job) finds it through the registry. Nothing here imports helical or torch at
module level (the scheduler imports the registry).

Tokens are an Arrow `datasets.Dataset` for every family, so the job can write them shard by shard with
`save_to_disk` and train from `load_from_disk` (memory-mapped): Geneformer's and the sequence families'
`process_data` return one already; scGPT's and UCE's return an in-memory torch Dataset, whose per-cell items are
written as Arrow columns here and read back through `arrow_items` (a torch Dataset over the memory-mapped rows that
returns exactly the items helical's own Dataset returned, so helical's collators see the same input).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import seqio
from ..errors import ConfigError
from ..spec import Plan, Precision
from . import cache, runner
from .runner import canonical_input, cells_with_known_genes, clean_input, known_gene_mask
from .sequence import local_hub_folder

if TYPE_CHECKING:
    from .vocab import GeneVocabulary


class FineTuneFamily:
    """One family's `*FineTuningModel`: build it, tokenise cells or records, train one epoch, get logits."""

    family: str
    tokens_on_disk: bool = True  # the training tokens are memory-mapped Arrow files (not an in-memory copy)

    def config(self, plan: Plan, device: str, batch_size: int) -> dict[str, Any]:
        raise NotImplementedError

    def build(self, config: dict[str, Any], n_classes: int) -> Any:
        raise NotImplementedError

    def select(self, data: Any, vocab: GeneVocabulary) -> tuple[Any, np.ndarray]:
        """The part of `data` (a shard's cells or records) the model can read, and which rows that is."""
        raise NotImplementedError

    def take(self, data: Any, rows: np.ndarray) -> Any:
        """Rows `rows` of a shard's data."""
        raise NotImplementedError

    def tokenise(self, model: Any, data: Any) -> Any:
        """helical's tokens of `select`'s output, as an Arrow `datasets.Dataset` (one row per cell or record)."""
        raise NotImplementedError

    def check_params(self, model: Any, freeze_layers: int) -> None:
        """E808 when the family's helical `train` cannot honour --freeze-layers."""
        if freeze_layers:
            raise ConfigError(
                "E808", f"{self.family}: the fine-tuning model of helical has no way to freeze layers "
                f"(--freeze-layers {freeze_layers})",
                "drop --freeze-layers (or pass 0) for this family; Geneformer, Helix-mRNA and Mamba2-mRNA support it",
            )  # fmt: skip

    def train_epoch(self, model: Any, dataset: Any, labels: np.ndarray, optimizer: Any, loss: Any,
                    freeze_layers: int) -> None:  # fmt: skip
        """One epoch of helical's `train` over `dataset` in its order (`labels`: its label column, same order)."""
        raise NotImplementedError

    def logits(self, model: Any, dataset: Any) -> np.ndarray:
        raise NotImplementedError


def optimizer_factory(optimizer: Any) -> Callable[..., Any]:
    """What helical's `train(optimizer=...)` calls with the parameters: *our* optimizer, every epoch the same one
    (helical makes a new one per call; Adam's moments must carry over from epoch to epoch)."""
    return lambda _params, **_kw: optimizer


# ---- cells --------------------------------------------------------------------------------------------------


class CellFineTune(FineTuneFamily):
    """Single-cell families: AnnData shards, cleaned as for embeddings; cells with no known gene are left out."""

    #: the genes reach helical in the canonical order and id system, as the embedding adapters give them
    #: (runner.canonical_input); False keeps the file's columns (what Geneformer's fine-tuning has always done)
    canonical: bool = True

    def select(self, data: Any, vocab: GeneVocabulary) -> tuple[Any, np.ndarray]:
        data = clean_input(data)
        if self.canonical:
            data, _ = canonical_input(data, vocab, False)
            keep = cells_with_known_genes(data, np.ones(data.n_vars, dtype=bool))
        else:
            keep = cells_with_known_genes(data, known_gene_mask(list(data.var_names), vocab.symbols, vocab.ensembl))
        if not keep.any():
            return None, keep
        return (data if keep.all() else data[np.flatnonzero(keep)].copy()), keep

    def take(self, data: Any, rows: np.ndarray) -> Any:
        return data[rows]


def items_to_arrow(items: Iterator[dict[str, Any]]) -> Any:
    """Per-cell items (dicts of numpy arrays / numbers) of one shard as an Arrow dataset (saved to disk next)."""
    from datasets import Dataset

    return Dataset.from_list(list(items))


def arrow_items(dataset: Any, make: Callable[[dict[str, Any], int], Any], collator: Any = None) -> Any:
    """A torch Dataset over the rows of an Arrow dataset (memory-mapped), `make(row, i)` rebuilding helical's item."""
    from torch.utils.data import Dataset

    class ArrowItems(Dataset):
        collator_fn = collator

        def __len__(self) -> int:
            return len(dataset)

        def __getitem__(self, i: int) -> Any:
            return make(dataset[int(i)], int(i))

    return ArrowItems()


# ---- sequences ----------------------------------------------------------------------------------------------


class SequenceFineTune(FineTuneFamily):
    """Sequence families: records of a FASTA or table (labels: a column of the table, as for embeddings).

    helical's collators stack a batch's token lists, so every record is tokenised to one length: the longest record
    of the input, capped at the model's context (a longer record is truncated to the context; the input's record
    lengths come from its index), plus the special tokens the tokenizer adds (`specials`)."""

    specials: int = 1
    special_tokens_mask: bool = True

    def tokens(self, plan: Plan) -> int:
        seq = plan.input.sequence
        assert seq is not None
        return min(seq.context, seqio.longest_record(plan.input)) + self.specials

    def select(self, data: Any, vocab: GeneVocabulary) -> tuple[Any, np.ndarray]:
        return list(data), np.ones(len(data), dtype=bool)

    def take(self, data: Any, rows: np.ndarray) -> Any:
        return [data[int(i)] for i in rows]

    def tokenise(self, model: Any, data: Sequence[Any]) -> Any:
        from datasets import Dataset

        length = int(model.ha_tokens)
        sequences = [r.sequence[: length - self.specials] for r in data]
        extra = {"return_special_tokens_mask": True} if self.special_tokens_mask else {}
        encoded = model.tokenizer(sequences, padding="max_length", truncation=True, max_length=length, **extra)
        return Dataset.from_dict({k: encoded[k] for k in ("input_ids", *(("special_tokens_mask",) if extra else ()))})

    def logits(self, model: Any, dataset: Any) -> np.ndarray:
        return np.asarray(model.get_outputs(dataset.select_columns(self.columns())), dtype=np.float32)

    def columns(self) -> list[str]:
        return ["input_ids", "special_tokens_mask"] if self.special_tokens_mask else ["input_ids"]


class HubSequenceFineTune(SequenceFineTune):
    """The Hugging Face-style mRNA families (Helix-mRNA, Mamba2-mRNA): helical's `<Family>Config` pointed at the
    fixture's (or cache's) local hub folder, `<Family>FineTuningModel(config, "classification", output_size)`, and
    --freeze-layers N as helical's `trainable_layers` = layers - N. helical's `train` reads the data in order; the
    job hands it a dataset shuffled per epoch (seeded). A subclass names its classes and its weights folder."""

    #: extra keyword arguments of helical's `train` for this family
    train_options: dict[str, Any] = {}

    def helical_classes(self) -> tuple[Any, Any]:
        """(the family's helical Config class, its FineTuningModel class), imported when called."""
        raise NotImplementedError

    def weights_folder(self) -> str:
        raise NotImplementedError

    def adjust(self, model: Any) -> None:
        """Family-specific settings on the built model (none by default)."""

    def config(self, plan: Plan, device: str, batch_size: int) -> dict[str, Any]:
        tokens = self.tokens(plan)
        return {"batch_size": batch_size, "device": device, "max_length": tokens, "tokens": tokens}

    def build(self, config: dict[str, Any], n_classes: int) -> Any:
        config_class, model_class = self.helical_classes()
        given = dict(config)
        tokens = given.pop("tokens")
        helical_config = config_class(**given)
        helical_config.config["model_name"] = local_hub_folder(
            cache.models_dir(runner.helical_prefix()) / self.weights_folder()
        )
        model = model_class(helical_config, "classification", output_size=n_classes)
        self.adjust(model)
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
            **self.train_options,
        )


def trainable_layers(model: Any, layers: Any, freeze_layers: int, family: str) -> int:
    """helical's `trainable_layers` (the last N layers train; 0: all) for our `freeze_layers` (the first N frozen)."""
    total = len(layers)
    if freeze_layers >= total:
        raise ConfigError("E808", f"--freeze-layers {freeze_layers} freezes all {total} layers of the {family} model",
                          f"pass --freeze-layers below {total}")  # fmt: skip
    return total - freeze_layers if freeze_layers else 0


# ---- mixed precision ----------------------------------------------------------------------------------------


def training_precision(device: str, precision: Precision) -> Precision:
    """The dtype a training runs its forward passes in: fp32 on a CPU; on a GPU the resource profile's, except
    fp16 becomes bf16: helical's `train` calls backward() and step() itself, so no GradScaler can scale an fp16
    loss (small gradients would underflow to zero); bf16 has fp32's exponent range and needs no scaler."""
    if not device.startswith("cuda") or precision == "fp32":
        return "fp32"
    return "bf16"


@contextlib.contextmanager
def autocast(device: str, precision: Precision) -> Iterator[None]:
    """torch.autocast on CUDA with the training precision's dtype (weights and optimizer stay fp32); nothing on
    a CPU. Runs only on a GPU: not exercised on the CPU-only CI."""
    if training_precision(device, precision) == "fp32":
        yield
        return
    import torch

    with torch.autocast("cuda", dtype=torch.bfloat16), runner.precision_scope(device, "bf16"):
        yield
