"""A bf16 run on a CPU (torch autocast) checks itself against fp32 on a seeded sample of its cells (agreement.py):
the manifest and report.html carry the cosine and kNN-overlap numbers, and floors it cannot meet fail the gate with
E404. Geneformer's fixture: the fastest single-cell family; 60 cells in two shards."""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import numpy as np
import pytest

from helical_airflow import agreement
from helical_airflow.errors import ConfigError
from helical_airflow.pipeline import run
from helical_airflow.plan import load_plan
from helical_airflow.quality import QualityGateError, quality_gate, require_passed
from helical_airflow.spec import Manifest, RunParams

pytestmark = pytest.mark.slow

SAMPLE = 24  # of 60 cells in two shards: both hold sampled rows


@pytest.fixture(scope="module")
def bf16_run(sample_h5ad: Path, fixture_cache: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest]:
    root = tmp_path_factory.mktemp("bf16")
    subset = root / "pbmc60.h5ad"
    ad.read_h5ad(sample_h5ad)[:60].copy().write_h5ad(subset)
    params = RunParams(model="geneformer", device="cpu", precision="bf16", shard_size=30, agreement_cells=SAMPLE,
                       cache_dir=fixture_cache)  # fmt: skip
    manifest = run(subset, params, root / "out")
    return root / "out" / manifest.dataset / manifest.run_key, manifest


def test_a_bf16_run_records_its_agreement_with_fp32(bf16_run: tuple[Path, Manifest]) -> None:
    run_dir, _ = bf16_run
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["params"]["cpu_precision"] == "bf16"
    assert [s["precision"] for s in manifest["shards"]] == ["bf16", "bf16"]
    block = manifest["quality"]["precision_agreement"]
    assert block is not None and block["precision"] == "bf16" and block["reference"] == "fp32"
    assert block["sample_cells"] == SAMPLE == sum(s["agreement_cells"] for s in manifest["shards"])
    assert all(s["agreement_cells"] > 0 for s in manifest["shards"])
    assert -1 <= block["cosine_min"] <= block["cosine_median"] <= 1 and block["cosine_min"] < 1  # bf16 rounds
    assert 0 <= block["knn_overlap_min"] <= block["knn_overlap"] <= 1 and block["knn_k"] == 2  # 24 // 10
    assert block["passed"] is True and manifest["quality"]["passed"] is True
    assert block["thresholds"] == {"min_cosine": 0.99, "min_knn_overlap": 0.5}  # agreement.DEFAULT_THRESHOLDS

    # the reference really is another pass: fp32 rows differ from the run's bf16 rows, and only a little
    plan = load_plan(run_dir / "plan.json")
    rows = agreement.sample_of(plan).rows
    ours = ad.read_h5ad(run_dir / "embeddings.h5ad").obsm["X_geneformer"][rows]
    fp32 = np.vstack([np.load(agreement.agreement_file(plan, s.index)) for s in plan.shards])
    assert fp32.shape == ours.shape and not np.array_equal(fp32, ours)
    cos = agreement.cosines(ours, fp32)
    assert cos.min() == pytest.approx(block["cosine_min"], abs=1e-6)

    page = (run_dir / "report.html").read_text()
    assert "id='precision-agreement'" in page and "bf16 (as run) vs fp32" in page
    assert f"{block['cosine_min']:.6f}, 1 - cosine {1 - block['cosine_min']:.2g}" in page
    assert f"{block['knn_overlap']:.4f}" in page


def test_floors_above_what_bf16_reaches_fail_the_gate_with_e404(
    bf16_run: tuple[Path, Manifest], monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir, _ = bf16_run
    plan = load_plan(run_dir / "plan.json")
    monkeypatch.setenv("HELICAL_AIRFLOW_PRECISION_THRESHOLDS", '{"min_cosine": 1.0}')  # bf16 never rounds to none
    report = quality_gate(plan)
    assert not report.passed and report.precision_agreement is not None
    assert report.precision_agreement.thresholds_source == "HELICAL_AIRFLOW_PRECISION_THRESHOLDS"
    with pytest.raises(QualityGateError) as failed:
        require_passed(report)
    assert failed.value.code == "E404" and "lowest per-row cosine" in failed.value.message
    saved = json.loads((run_dir / "manifest.json").read_text())["quality"]
    assert saved["passed"] is False and saved["precision_agreement"]["passed"] is False

    monkeypatch.setenv("HELICAL_AIRFLOW_PRECISION_THRESHOLDS", '{"min_cosine": 2}')
    with pytest.raises(ConfigError) as invalid:
        agreement.thresholds_for(plan)  # what the gate calls
    assert (
        invalid.value.code == "E405" and "min_cosine: Input should be less than or equal to 1" in invalid.value.message
    )
