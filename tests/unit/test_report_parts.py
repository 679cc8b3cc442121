"""Parts of report.html that are easy to get wrong: parameters as executed, colours for many categories,
natural legend order, the legend outside the points."""

from __future__ import annotations

import numpy as np

from helical_airflow import report
from helical_airflow.spec import ShardResult


def _shard(index: int, **kw: object) -> ShardResult:
    base = dict(index=index, start=0, stop=10, cells=10, embedding_dim=4, seconds=1.0, model_load_seconds=0.0,
                peak_rss_mb=1.0, device="cpu", precision="fp32", engine="fast", batch_size=16, host="h",
                finished_at="t")  # fmt: skip
    return ShardResult(**{**base, **kw})  # type: ignore[arg-type]


def test_parameters_are_the_ones_the_shards_ran_with() -> None:
    assert report.executed([_shard(0), _shard(1)]) == {"device": "cpu", "precision": "fp32", "engine": "fast",
                                                        "batch_size": "16"}  # fmt: skip
    mixed = report.executed([_shard(0), _shard(1, device="cuda", precision="fp16"), _shard(2, batch_size=None)])
    assert mixed["device"] == "cpu (2 shards), cuda (1 shards)"
    assert mixed["precision"] == "fp16 (1 shards), fp32 (2 shards)"
    assert report.executed([_shard(0, batch_size=None)])["batch_size"] == "not recorded"


def test_many_categories_keep_distinct_colours_and_sort_naturally() -> None:
    assert len(set(report.palette(60))) == 60
    labels = np.array(["10", "2", "1", "0", report.MISSING_LABEL, "2", "B cell", "B cell 10", "B cell 9"])
    entries = report.legend_entries(labels)
    assert [name for name, _, _ in entries] == ["0", "1", "2", "10", "B cell", "B cell 9", "B cell 10",
                                                report.MISSING_LABEL]  # fmt: skip
    assert dict((n, k) for n, _, k in entries)["2"] == 2
    assert entries[-1][1] == "#bbbbbb"  # unlabelled cells: grey
    assert len({colour for _, colour, _ in entries}) == len(entries)


def test_legend_is_outside_the_points() -> None:
    rng = np.random.default_rng(0)
    coords = rng.normal(size=(300, 2))
    labels = np.array([str(i % 40) for i in range(300)])
    fig = report.scatter_figure([("UMAP of the embeddings", coords), ("PCA of the embeddings", coords)], labels, "ct")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    (legend,) = fig.legends
    box = legend.get_window_extent(renderer)
    assert all(box.x0 >= ax.get_window_extent(renderer).x1 for ax in fig.axes)
    assert len(legend.get_texts()) == 40 and legend.get_texts()[2].get_text() == "2 (8)"
    assert legend.get_texts()[10].get_text() == "10 (8)"
