"""The fast path's batching pieces: ragged token storage, length-sorted token-budget batches, and the
reconstruction of helical's own scGPT batch padding. Equivalence with helical is tested in
tests/integration/test_fast_equivalence.py."""

from __future__ import annotations

import numpy as np
import pytest

from helical_airflow.models.geneformer.fast import Ragged, length_sorted_batches
from helical_airflow.models.scgpt.fast import helical_padding


def random_rows(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    return [rng.integers(0, 1000, rng.integers(0, 40)) for _ in range(n)]


def test_ragged_take_returns_the_requested_rows_back_to_back() -> None:
    rng = np.random.default_rng(1)
    rows = random_rows(rng, 50)
    ragged = Ragged.from_rows(rows)
    assert len(ragged) == 50
    assert ragged.lengths.tolist() == [len(r) for r in rows]
    index = rng.permutation(50)[:17]
    values, lengths = ragged.take(index)
    assert lengths.tolist() == [len(rows[i]) for i in index]
    assert values.tolist() == np.concatenate([rows[i] for i in index]).tolist()
    empty, none = ragged.take(np.array([], dtype=np.int64))
    assert empty.size == 0 and none.size == 0


def test_ragged_from_dataset_reads_arrow_lists_including_a_select_view() -> None:
    datasets = pytest.importorskip("datasets")
    rng = np.random.default_rng(2)
    rows = random_rows(rng, 30)
    ds = datasets.Dataset.from_dict({"input_ids": rows, "length": [len(r) for r in rows]})
    whole = Ragged.from_dataset(ds)
    assert [whole.values[a:b].tolist() for a, b in zip(whole.offsets[:-1], whole.offsets[1:], strict=True)] == [
        r.tolist() for r in rows
    ]
    picked = [29, 3, 3, 11]
    view = Ragged.from_dataset(ds.select(picked))  # an indices mapping over the same Arrow table
    assert view.lengths.tolist() == [len(rows[i]) for i in picked]
    assert view.values.tolist() == np.concatenate([rows[i] for i in picked]).tolist()


@pytest.mark.parametrize("budget,max_cells", [(64, None), (200, None), (200, 3), (1, None)])
def test_batches_cover_every_cell_once_longest_first_within_budget(budget: int, max_cells: int | None) -> None:
    rng = np.random.default_rng(3)
    lengths = rng.integers(1, 90, 137)
    batches = length_sorted_batches(lengths, budget, max_cells)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    assert (np.diff(lengths[flat]) <= 0).all()  # longest first overall
    for batch in batches:
        padded = len(batch) * lengths[batch].max()
        assert padded <= budget or len(batch) == 1  # a cell longer than the budget goes alone
        if max_cells:
            assert len(batch) <= max_cells


def test_equal_lengths_keep_file_order() -> None:
    lengths = np.array([5, 7, 5, 7, 5])
    flat = np.concatenate(length_sorted_batches(lengths, 10))
    assert flat.tolist() == [1, 3, 0, 2, 4]


def test_helical_padding_matches_a_direct_simulation_of_its_batches() -> None:
    rng = np.random.default_rng(4)
    lengths = rng.integers(1, 2000, 101)
    n_pad, width = helical_padding(lengths, batch_size=24, max_length=1200)
    for start in range(0, len(lengths), 24):  # what helical's DataCollator does per DataLoader batch
        batch = lengths[start : start + 24]
        longest = max(batch)
        expect_width = 1200 if longest >= 1200 else longest
        for i, length in enumerate(batch, start):
            assert width[i] == expect_width
            assert n_pad[i] == expect_width - min(length, 1200)
    assert (n_pad >= 0).all()


def test_both_packed_attentions_equal_per_cell_padded_free_attention() -> None:
    """The CPU (one call per cell) and GPU (nested tensors) attention of the packed kernel against attention
    computed cell by cell from its own rows, on cells of very different lengths (1 token included)."""
    import torch
    import torch.nn.functional as F

    from helical_airflow.models.geneformer.fast import _attention_jagged, _attention_per_cell

    torch.manual_seed(0)
    lengths = np.array([1, 37, 5, 64, 2])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    q, k, v = (torch.randn(int(lengths.sum()), 4, 8) for _ in range(3))
    expected = torch.cat([
        torch.softmax(q[a:b].transpose(0, 1) @ k[a:b].transpose(0, 1).transpose(1, 2) * 0.3, -1)
        @ v[a:b].transpose(0, 1)
        for a, b in zip(offsets[:-1], offsets[1:], strict=True)
    ], dim=1).transpose(0, 1)
    offsets_t = torch.from_numpy(offsets)
    for attention in (_attention_per_cell, _attention_jagged):
        got = attention(q, k, v, offsets, offsets_t, 0.3)
        assert got.shape == q.shape
        torch.testing.assert_close(got.reshape(q.shape), expected, rtol=1e-5, atol=1e-5)
    # a cell must not see its neighbours: attention over the whole pack differs
    whole = F.scaled_dot_product_attention(*(t.transpose(0, 1)[None] for t in (q, k, v)), scale=0.3)[0].transpose(0, 1)
    assert not torch.allclose(whole, expected, atol=1e-3)
