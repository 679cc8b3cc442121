"""scGPT cell embeddings equal to helical's `scGPT.get_embeddings`, computed faster.

helical already runs scGPT encoder only (`TransformerModel._encode`; the expression, MVC and
classification decoders are never called), so what is trimmed here is padding and host work:
- each cell is prepared by helical's own code, one cell at a time: the dataset row (<cls> + the
  cell's expressed genes) and helical's `DataCollator` (per-cell binning with a fixed-seed generator,
  and a fixed-seed sample of 1,200 tokens for longer cells), so tokens and values are helical's;
- cells sorted by length and batched by a token budget, padded only to their batch's longest cell,
  then `_encode` with helical's weights; `torch.inference_mode`, fp16/bf16 autocast on GPU, pinned
  memory and non-blocking copies, results back in the input's cell order.
Pooling is helical's, then the same L2 normalisation:
- "cls": the <cls> position;
- "cell": helical averages positions 1.. of its *padded* batch, padding included. Every padding
  position of a cell computes the same vector (same pad token and value, attending to the same
  unmasked keys), so helical's mean is (sum over the cell's genes + n_pad x that vector) / (batch
  width - 1), where n_pad comes from helical's own batching (file order, `batch_size` cells, width =
  longest cell, at most 1,200). We compute that vector once per cell (one extra padding column) and
  rebuild helical's value exactly, quirk included (docs/fast_path.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import ConfigError
from ...spec import Precision
from ..geneformer.fast import DEFAULT_TOKEN_BUDGET, Ragged, autocast, length_sorted_batches, to_device

if TYPE_CHECKING:
    import torch


def scgpt_tokens(model: Any, dataset: Any) -> tuple[Ragged, Ragged]:
    """(gene ids, binned values) per cell, exactly as helical's collator makes them for one cell."""
    from helical.models.scgpt.data_collator import DataCollator

    config = model.config
    collator = DataCollator(
        do_padding=True,
        pad_token_id=model.vocab[config["pad_token"]],
        pad_value=config["pad_value"],
        do_mlm=False,
        do_binning=True,
        max_length=config["MAX_LENGTH"],
        sampling=True,
        keep_first_n_tokens=1,
    )
    genes: list[np.ndarray] = []
    values: list[np.ndarray] = []
    for i in range(len(dataset)):
        # alone in a batch, a cell is neither padded nor sampled differently than in helical's batch
        batch = collator([dataset[i]])
        genes.append(batch["gene"][0].numpy())
        values.append(batch["expr"][0].numpy())
    return Ragged.from_rows(genes, np.int64), Ragged.from_rows(values, np.float32)


def helical_padding(lengths: np.ndarray, batch_size: int, max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """(padding positions, batch width) of each cell in helical's own batches: file order, fixed size."""
    lengths = np.minimum(lengths, max_length)
    width = np.empty_like(lengths)
    for start in range(0, len(lengths), batch_size):
        width[start : start + batch_size] = lengths[start : start + batch_size].max()
    return width - lengths, width


def scgpt_embeddings(
    model: Any,
    dataset: Any,
    *,
    precision: Precision = "fp32",
    token_budget: int | None = None,
) -> np.ndarray:
    """Cell embeddings as helical's `model.get_embeddings(dataset)` returns them (L2-normalised rows).

    model: a loaded `helical.models.scgpt.scGPT`; dataset: what its `process_data` returned.
    """
    import torch

    emb_mode = model.config["emb_mode"]
    if emb_mode not in ("cls", "cell"):
        raise ConfigError(
            "E230",
            f"the fast engine returns cell embeddings; emb_mode {emb_mode!r} is not supported",
            "use emb_mode 'cls' or 'cell', or --engine helical",
        )
    if getattr(dataset, "batch_ids", None) is not None:
        raise ConfigError(
            "E233",
            "the fast scGPT path does not take batch labels",
            "process the data without use_batch_labels, or use --engine helical",
        )
    encoder = model.model
    device = next(encoder.parameters()).device
    pad_id = int(model.vocab[model.config["pad_token"]])
    pad_value = float(model.config["pad_value"])
    genes, values = scgpt_tokens(model, dataset)
    lengths = genes.lengths
    extra = 1 if emb_mode == "cell" else 0  # one padding column per cell: helical's padding vector
    budget = token_budget or DEFAULT_TOKEN_BUDGET.get(device.type, DEFAULT_TOKEN_BUDGET["cuda"])
    dim = int(model.config["embsize"])

    # cell mode keeps [sum over genes | padding vector] per cell until helical's mean is rebuilt
    out = torch.empty((len(lengths), dim * (1 + extra)), dtype=torch.float32, device=device)
    with torch.inference_mode(), autocast(device, precision):
        for index in length_sorted_batches(lengths + extra, budget):
            ids, lens = genes.take(index)
            expr, _ = values.take(index)
            width = int(lens.max()) + extra
            rows = np.repeat(np.arange(len(index)), lens)
            cols = np.arange(len(ids)) - np.repeat(np.cumsum(lens) - lens, lens)
            gene_grid = np.full((len(index), width), pad_id, dtype=np.int64)
            expr_grid = np.full((len(index), width), pad_value, dtype=np.float32)
            gene_grid[rows, cols] = ids
            expr_grid[rows, cols] = expr
            src = to_device(gene_grid, device)
            hidden = encoder._encode(src, to_device(expr_grid, device), src_key_padding_mask=src.eq(pad_id))
            out[to_device(index, device)] = _pool(hidden, lens, emb_mode, device).float()

    result = out.cpu().numpy()
    if emb_mode == "cell":
        n_pad, helical_width = helical_padding(
            lengths, int(model.config["batch_size"]), int(model.config["MAX_LENGTH"])
        )
        summed, pad_vector = result[:, :dim], result[:, dim:]
        result = (summed + n_pad[:, None] * pad_vector) / (helical_width[:, None] - 1)
    # helical normalises with numpy after its loop; the same here
    return result / np.linalg.norm(result, axis=1, keepdims=True)


def _pool(hidden: torch.Tensor, lens: np.ndarray, emb_mode: str, device: torch.device) -> torch.Tensor:
    """cls: position 0. cell: [sum of positions 1..len-1 | the padding vector] side by side."""
    import torch

    if emb_mode == "cls":
        return hidden[:, 0, :]
    lens_t = to_device(lens, device)
    positions = torch.arange(hidden.shape[1], device=device)
    genes_only = (positions[None, :] >= 1) & (positions[None, :] < lens_t[:, None])
    summed = (hidden.float() * genes_only[..., None]).sum(1)
    pad_vector = hidden[torch.arange(len(lens), device=device), lens_t].float()  # first padding column
    return torch.cat([summed, pad_vector], dim=1)
