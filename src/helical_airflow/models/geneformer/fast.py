"""Geneformer cell embeddings equal to helical's `get_embeddings`, computed several times faster.

helical's tokenisation and weights are kept: the input is the dataset `Geneformer.process_data`
returns and the weights are the `bert` submodule of helical's own `BertForMaskedLM` (no copy).
What changes is only how the forward pass is run (docs/fast_path.md says why each change keeps the
result):
- encoder only: helical computes the masked-LM head (scores over the whole gene vocabulary for every
  token) and every layer's hidden states, then uses one layer;
- cells sorted by length and cut into batches by a token budget, not in file order at a fixed size,
  so almost no padding is computed; results are put back in the input's cell order;
- `torch.inference_mode`, fp16/bf16 autocast on GPU, pinned host memory and non-blocking copies,
  results kept on the device until the end so the host never waits for the GPU mid-run;
- the "packed" kernel drops padding altogether: every token of a batch in one (tokens, hidden) matrix,
  attention per cell (on GPU through variable-length nested-tensor attention, on CPU one unmasked
  scaled-dot-product attention call per cell).
Pooling is helical's: the mean over the cell's tokens without <cls>/<eos> ("cell"), or the <cls>
token ("cls"), of hidden state `emb_layer` (helical's indexing: 0 = embeddings, -1 = last layer).

The batching helpers (`Ragged`, `length_sorted_batches`, `autocast`) are shared with fast_scgpt.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ...errors import ConfigError
from ...spec import Precision

if TYPE_CHECKING:
    import torch

Kernel = Literal["auto", "padded", "packed"]

#: "auto" uses the packed kernel on GPU from this hidden size up, and always on CPU
#: (bench/throughput.py, docs/benchmarks.md)
PACKED_MIN_HIDDEN = 512

#: tokens per batch (cells x longest cell) by device; large enough to fill the device, small
#: enough that attention scores of the longest cells fit (measured in bench/throughput.py)
DEFAULT_TOKEN_BUDGET = {"cpu": 16_384, "cuda": 131_072}


@dataclass(frozen=True)
class Ragged:
    """Variable-length rows stored back to back: row i is values[offsets[i]:offsets[i + 1]]."""

    values: np.ndarray
    offsets: np.ndarray  # int64, len(rows) + 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @classmethod
    def from_rows(cls, rows: Sequence[np.ndarray], dtype: Any = np.int64) -> Ragged:
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        values = np.concatenate([np.asarray(r, dtype=dtype) for r in rows]) if rows else np.zeros(0, dtype)
        return cls(values.astype(dtype, copy=False), offsets)

    @classmethod
    def from_dataset(cls, dataset: Any, column: str = "input_ids") -> Ragged:
        """Read a list column of a Hugging Face `datasets.Dataset` straight from its Arrow table.

        `dataset[column]` would build one Python list per cell (minutes for 100,000 cells); the Arrow
        list array already is values + offsets.
        """
        if getattr(dataset, "_indices", None) is not None:  # a select()/shuffle() view: materialise it
            dataset = dataset.flatten_indices()
        array = dataset.data.column(column).combine_chunks()
        offsets = array.offsets.to_numpy().astype(np.int64)
        values = array.values.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        return cls(values[offsets[0] : offsets[-1]], offsets - offsets[0])

    def take(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows `index` back to back, and their lengths."""
        lengths = self.lengths[index]
        if len(index) == 0:
            return self.values[:0], lengths
        starts = self.offsets[index]
        # position of every output element within its row, plus that row's start
        within = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        return self.values[np.repeat(starts, lengths) + within], lengths


def length_sorted_batches(lengths: np.ndarray, token_budget: int, max_cells: int | None = None) -> list[np.ndarray]:
    """Cell indices, longest first, cut so each batch's padded size (cells x longest) fits the budget.

    A cell longer than the budget gets a batch of its own. Sorting is stable, so equal lengths keep
    file order.
    """
    order = np.argsort(-np.asarray(lengths), kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    while start < len(order):
        longest = max(int(lengths[order[start]]), 1)
        size = max(1, token_budget // longest)
        if max_cells:
            size = min(size, max_cells)
        batches.append(order[start : start + size])
        start += size
    return batches


@contextlib.contextmanager
def autocast(device: torch.device, precision: Precision) -> Iterator[None]:
    """fp16/bf16 autocast on GPU; fp32 (and everything on CPU) runs as is."""
    import torch

    if device.type != "cuda" or precision == "fp32":
        yield
        return
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    with torch.autocast("cuda", dtype=dtype):
        yield


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """Host array -> device tensor; on GPU through pinned memory, without waiting for the copy."""
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor


def _resolve_kernel(kernel: Kernel, device: torch.device, bert: Any) -> Literal["padded", "packed"]:
    if kernel == "padded":
        return "padded"
    config = bert.config
    standard = getattr(config, "position_embedding_type", "absolute") == "absolute" and not config.is_decoder
    if kernel == "packed":
        if not standard:
            raise ConfigError(
                "E231",
                "the packed kernel supports BERT encoders with absolute positions only",
                "use kernel='padded' for this checkpoint",
            )
        return "packed"
    if not standard:
        return "padded"
    if device.type == "cpu":  # no padding to compute and unmasked attention: ~10% faster than padded on CPU
        return "packed"
    # packed wins for the 104M model on an H200 (5.1x vs 4.2x helical) but loses for the 10M one
    # (hidden 256: 1.0x vs 1.3x), where per-batch overheads of nested tensors outweigh the padding
    return "packed" if int(config.hidden_size) >= PACKED_MIN_HIDDEN else "padded"


def geneformer_embeddings(
    model: Any,
    dataset: Any,
    *,
    precision: Precision = "fp32",
    token_budget: int | None = None,
    kernel: Kernel = "auto",
) -> np.ndarray:
    """Cell embeddings of a tokenised dataset, as helical's `model.get_embeddings(dataset)` returns them.

    model: a loaded `helical.models.geneformer.Geneformer`; dataset: what its `process_data` returned
    (or a `Ragged` of token ids). Runs on the model's device. Returns float32 (n_cells, hidden).
    """
    import torch

    emb_mode = model.emb_mode
    if emb_mode not in ("cell", "cls"):
        raise ConfigError(
            "E230",
            f"the fast engine returns cell embeddings; emb_mode {emb_mode!r} is not supported",
            "use emb_mode 'cell' or 'cls', or --engine helical",
        )
    tokens = dataset if isinstance(dataset, Ragged) else Ragged.from_dataset(dataset)
    bert = model.model.bert
    device = next(bert.parameters()).device
    cls_present, eos_present = bool(model.cls_present), bool(model.eos_present)
    if emb_mode == "cls":
        cls_id = model.tk.gene_token_dict["<cls>"] if cls_present else None
        starts = tokens.values[tokens.offsets[:-1][tokens.lengths > 0]]
        if cls_id is None or not (starts == cls_id).all():
            raise ConfigError(
                "E232",
                "emb_mode 'cls' needs every cell to start with a <cls> token",
                "use a Geneformer v2/v3 model (their tokenizer adds <cls>), or emb_mode 'cell'",
            )
    layer = int(model.layer_to_quant)
    n_layers = len(bert.encoder.layer)
    depth = n_layers if layer == -1 else layer  # hidden_states[k] is the output of the first k layers
    which = _resolve_kernel(kernel, device, bert)
    budget = token_budget or DEFAULT_TOKEN_BUDGET.get(device.type, DEFAULT_TOKEN_BUDGET["cuda"])
    # helical's pooling: drop <cls> (first) and <eos> (last) from the mean when the vocabulary has them
    skip_first = 1 if cls_present else 0
    skip_last = 1 if cls_present and eos_present else 0

    out = torch.empty((len(tokens), bert.config.hidden_size), dtype=torch.float32, device=device)
    lengths = tokens.lengths
    with torch.inference_mode(), autocast(device, precision):
        for index in length_sorted_batches(lengths, budget):
            ids, lens = tokens.take(index)
            if which == "packed":
                hidden, seg, lens_t = _packed_forward(bert, ids, lens, depth, device)
                pooled = _pool_packed(hidden, seg, lens_t, lens, emb_mode, skip_first, skip_last)
            else:
                hidden, mask = _padded_forward(bert, ids, lens, layer, int(model.pad_token_id), device)
                pooled = _pool_padded(hidden, mask, lens, emb_mode, skip_first, skip_last, device)
            out[to_device(index, device)] = pooled.float()
    return out.cpu().numpy()


def _padded_forward(
    bert: Any, ids: np.ndarray, lens: np.ndarray, layer: int, pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The HF encoder on one right-padded batch (padding only up to this batch's longest cell)."""

    width = max(int(lens.max()), 1)
    rows = np.repeat(np.arange(len(lens)), lens)
    cols = np.arange(len(ids)) - np.repeat(np.cumsum(lens) - lens, lens)
    grid = np.full((len(lens), width), pad_id, dtype=np.int64)
    grid[rows, cols] = ids
    keep = np.zeros((len(lens), width), dtype=bool)
    keep[rows, cols] = True
    input_ids, mask = to_device(grid, device), to_device(keep, device)
    attention: torch.Tensor | None = mask
    if keep.all():
        attention = None  # no padding: SDPA may pick its fastest (mask-free) kernel
    elif bert.config._attn_implementation == "sdpa":
        # a ready 4D boolean mask is used as is; from a 2D one transformers checks on the host, per
        # batch, whether any token is padding, which makes the host wait for the GPU
        attention = mask[:, None, None, :]
    if layer == -1:
        hidden = bert(input_ids=input_ids, attention_mask=attention).last_hidden_state
    else:
        hidden = bert(input_ids=input_ids, attention_mask=attention, output_hidden_states=True).hidden_states[layer]
    return hidden, mask


def _pool_padded(
    hidden: torch.Tensor,
    mask: torch.Tensor,
    lens: np.ndarray,
    emb_mode: str,
    skip_first: int,
    skip_last: int,
    device: torch.device,
) -> torch.Tensor:
    import torch

    if emb_mode == "cls":
        return hidden[:, 0, :]
    positions = torch.arange(hidden.shape[1], device=device)
    last = to_device(lens - skip_last, device)
    use = (positions[None, :] >= skip_first) & (positions[None, :] < last[:, None])
    summed = (hidden.float() * use[..., None]).sum(1)
    return summed / to_device((lens - skip_first - skip_last).astype(np.float32), device)[:, None]


def _packed_forward(
    bert: Any, ids: np.ndarray, lens: np.ndarray, depth: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """BERT over all tokens of the batch back to back (no padding), with helical's own weights.

    Each step is the HF module's own computation (same submodules, same order): embeddings =
    LayerNorm(word + position + token type 0); per layer: self-attention (scaled dot product within
    each cell), output dense + residual + LayerNorm, intermediate dense + activation, output dense +
    residual + LayerNorm. Dropouts are identities in eval mode.
    """
    n_cells = len(lens)
    offsets = np.zeros(n_cells + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    positions = np.arange(len(ids)) - np.repeat(offsets[:-1], lens)
    tok = to_device(ids, device)
    pos = to_device(positions, device)
    offsets_t = to_device(offsets, device)
    seg = to_device(np.repeat(np.arange(n_cells), lens), device)
    lens_t = to_device(lens, device)
    emb = bert.embeddings
    x = emb.word_embeddings(tok) + emb.position_embeddings(pos) + emb.token_type_embeddings.weight[0]
    x = emb.LayerNorm(x)

    attention = _attention_per_cell if device.type == "cpu" else _attention_jagged
    for block in bert.encoder.layer[:depth]:
        sa = block.attention.self
        heads, head_dim = sa.num_attention_heads, sa.attention_head_size
        q = sa.query(x).view(-1, heads, head_dim)
        k = sa.key(x).view(-1, heads, head_dim)
        v = sa.value(x).view(-1, heads, head_dim)
        ctx = attention(q, k, v, offsets, offsets_t, sa.scaling).reshape(-1, heads * head_dim)
        x = block.attention.output.LayerNorm(block.attention.output.dense(ctx) + x)
        inner = block.intermediate.intermediate_act_fn(block.intermediate.dense(x))
        x = block.output.LayerNorm(block.output.dense(inner) + x)
    return x, seg, lens_t


def _attention_jagged(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, offsets: np.ndarray, offsets_t: torch.Tensor, scale: float
) -> torch.Tensor:
    """Attention within each cell of packed (tokens, heads, dim) q/k/v: one nested-tensor call (GPU flash kernels)."""
    import torch
    import torch.nn.functional as F

    lengths = np.diff(offsets)
    shortest, longest = int(lengths.min()), int(lengths.max())

    def jagged(t: torch.Tensor) -> torch.Tensor:  # (tokens, heads, dim) -> (cells, heads, j, dim)
        nested = torch.nested.nested_tensor_from_jagged(
            t,
            offsets_t,
            min_seqlen=shortest,
            max_seqlen=longest,  # hints: no device -> host sync
        )
        return nested.transpose(1, 2)

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*nested tensors is in prototype.*")
        ctx = F.scaled_dot_product_attention(jagged(q), jagged(k), jagged(v), scale=scale)
    return ctx.transpose(1, 2).values()


def _attention_per_cell(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, offsets: np.ndarray, offsets_t: torch.Tensor, scale: float
) -> torch.Tensor:
    """The same, one unmasked call per cell: on CPU nested-tensor attention falls back to slow math, while
    a cell of ~2,000 tokens is plenty of work for one call of the CPU flash kernel."""
    import torch
    import torch.nn.functional as F

    ctx = torch.empty_like(q)
    bounds = offsets.tolist()
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        # (j, heads, dim) -> (1, heads, j, dim) and back
        qc, kc, vc = (t[start:stop].transpose(0, 1).unsqueeze(0) for t in (q, k, v))
        ctx[start:stop] = F.scaled_dot_product_attention(qc, kc, vc, scale=scale)[0].transpose(0, 1)
    return ctx


def _pool_packed(
    hidden: torch.Tensor,
    seg: torch.Tensor,
    lens_t: torch.Tensor,
    lens: np.ndarray,
    emb_mode: str,
    skip_first: int,
    skip_last: int,
) -> torch.Tensor:
    import torch

    n_cells = len(lens)
    starts = torch.cumsum(lens_t, 0) - lens_t
    if emb_mode == "cls":
        return hidden[starts]
    within = torch.arange(hidden.shape[0], device=hidden.device) - starts[seg]
    use = (within >= skip_first) & (within < lens_t[seg] - skip_last)
    summed = torch.zeros((n_cells, hidden.shape[1]), dtype=torch.float32, device=hidden.device)
    summed.index_add_(0, seg, hidden.float() * use[:, None])
    return summed / (lens_t - skip_first - skip_last).float()[:, None]
