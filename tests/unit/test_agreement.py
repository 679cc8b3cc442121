"""The reduced-precision agreement's parts (agreement.py) without a model: the seeded sample and how shards split it,
the kNN overlap, the floors, the precision a CPU runs, and the families that refuse bf16 (E408)."""

from __future__ import annotations

import numpy as np
import pytest

from helical_airflow import agreement
from helical_airflow.embed import effective_precision
from helical_airflow.errors import ConfigError
from helical_airflow.models import get_model, registry
from helical_airflow.plan import resolve_params, shard_ranges
from helical_airflow.spec import PrecisionThresholds, RunParams


def test_the_sample_is_seeded_sorted_and_split_exactly_across_shards() -> None:
    sample = agreement.Sample(1000, 256, seed=7)
    assert len(sample.rows) == 256 == len(set(sample.rows)) and (np.diff(sample.rows) > 0).all()
    assert np.array_equal(sample.rows, agreement.Sample(1000, 256, seed=7).rows)  # every process draws the same
    assert not np.array_equal(sample.rows, agreement.Sample(1000, 256, seed=8).rows)
    shards = shard_ranges(1000, 300)
    pieces = [agreement.Sample(1000, 256, seed=7).within(s) + s.start for s in shards]
    assert np.array_equal(np.concatenate(pieces), sample.rows)
    assert all(((p >= s.start) & (p < s.stop)).all() for p, s in zip(pieces, shards, strict=True))
    assert np.array_equal(agreement.Sample(90, 256, seed=0).rows, np.arange(90))  # fewer rows: all of them


def test_knn_overlap_is_one_for_the_same_neighbourhoods_and_low_for_unrelated_ones() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 16))
    scaled = x * rng.uniform(0.5, 2.0, size=(120, 1))  # cosine neighbours do not see a row's length
    assert (agreement.knn_overlap(x, scaled, 10) == 1.0).all()
    unrelated = agreement.knn_overlap(x, rng.normal(size=(120, 16)), 10)
    assert unrelated.mean() < 0.3  # chance is 10/119
    noisy = agreement.knn_overlap(x, x + rng.normal(scale=0.05, size=x.shape), 10)
    assert unrelated.mean() < noisy.mean() < 1.0
    assert agreement.cosines(x, scaled) == pytest.approx(np.ones(120))


def test_floors_name_the_score_its_value_and_the_threshold() -> None:
    values = {"cosine_min": 0.97, "cosine_median": 0.999, "knn_overlap": 0.6, "knn_overlap_min": 0.2}
    assert agreement.check(values, None, "bf16") == []
    assert agreement.check(values, PrecisionThresholds(min_cosine=0.97, min_knn_overlap=0.6), "bf16") == []
    (problem,) = agreement.check(values, PrecisionThresholds(min_cosine=0.99, min_knn_overlap=0.5), "fp16")
    assert "fp16 vs fp32" in problem and "lowest per-row cosine 0.97" in problem and "threshold 0.99" in problem


def test_a_cpu_runs_bf16_only_when_asked_for_by_name() -> None:
    tahoe = get_model("tahoe")
    assert tahoe.profile.precision == "bf16" and tahoe.profile.gpu == "optional"  # its GPU default
    default = resolve_params(RunParams(model="tahoe"))
    asked = resolve_params(RunParams(model="tahoe", precision="bf16"))
    assert (default.precision, default.cpu_precision) == ("bf16", "fp32")
    assert (asked.precision, asked.cpu_precision) == ("bf16", "bf16")
    assert resolve_params(RunParams(model="geneformer", precision="fp16")).cpu_precision == "fp32"
    assert effective_precision("cpu", "bf16", default.cpu_precision) == "fp32"
    assert effective_precision("cpu", "bf16", asked.cpu_precision) == "bf16"
    assert effective_precision("cuda", "fp16", "fp32") == "fp16"


def test_families_whose_helical_code_cannot_return_bf16_refuse_it_with_e408() -> None:
    for name in ("uce", "genept"):
        with pytest.raises(ConfigError) as refused:
            registry.check_precision(get_model(name), "bf16")
        assert refused.value.code == "E408" and "BFloat16" in refused.value.message
        registry.check_precision(get_model(name), "fp16")  # fp16 tensors convert to numpy
    registry.check_precision(get_model("geneformer"), "bf16")
