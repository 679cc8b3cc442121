"""embed.Recycle.due: what an embed or predict process checks after each shard (docs/benchmarks.md, scale)."""

from __future__ import annotations

import gc
import weakref

import numpy as np

from helical_airflow.embed import Recycle


class _Node:
    """Stands in for a shard's AnnData and the model's intermediates: data held in a reference cycle."""

    def __init__(self, data: np.ndarray) -> None:
        self.data = data
        self.me = self


def test_due_frees_a_shards_cyclic_garbage_before_reading_the_rss() -> None:
    """A shard's cyclic garbage is freed at once (it piled up between Python's rare full collections: +~20 MB
    per 50,000-cell shard), so the RSS the recycle bound reads is the process's, not its garbage's."""
    gc.disable()  # only the collection `due` runs may free the cycle
    try:
        node = _Node(np.ones(2_000_000))  # 16 MB
        gone = weakref.ref(node)
        del node
        assert gone() is not None  # a cycle: reference counting alone keeps it
        stop, rss_mb = Recycle().due(1)
        assert gone() is None
        assert stop is False and rss_mb > 0
    finally:
        gc.enable()


def test_due_stops_past_the_memory_bound_or_the_shard_count() -> None:
    _, rss_mb = Recycle().due(1)
    assert Recycle(max_rss_mb=rss_mb / 2).due(1)[0] is True  # this process is over half its own RSS
    assert Recycle(max_rss_mb=rss_mb * 4).due(1)[0] is False
    assert Recycle(max_shards=2).due(1)[0] is False
    assert Recycle(max_shards=2).due(2)[0] is True
    assert Recycle().due(10_000)[0] is False  # no bound: never
