"""report.html of a real run on the sample (fixture weights), UMAP on: self-contained, parameters as executed,
the gate's scores beside the PCA baseline, the label column guessed or chosen, input QC, fixture banner."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_report_of_a_labelled_run(sample_h5ad: Path, fixture_cache: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "helical_airflow.cli", "run", str(sample_h5ad), "--model", "geneformer", "--device",
         "cpu", "--shard-size", "250", "--cache-dir", fixture_cache, "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "HELICAL_AIRFLOW_REPORT_UMAP": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = [p for p in (tmp_path / "sample").iterdir() if not p.is_symlink()]
    assert (tmp_path / "sample" / "latest").resolve() == run_dir.resolve()  # `latest` follows a CLI run too
    page = (run_dir / "report.html").read_text()
    quality = json.loads((run_dir / "quality.json").read_text())

    # self-contained: nothing is fetched (no URL in any src or href, no script)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page) and "<script" not in page
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 3  # scatter, QC, timing
    assert 'alt="UMAP and PCA of the embeddings"' in page and "UMAP left out" not in page

    # as executed: a CPU run says fp32 though the profile asks fp16
    assert "<th>precision (as run)</th><td>fp32 (asked: fp16)</td>" in page
    # an fp32 run has nothing to check against fp32 (agreement.py): no block, and the page says so
    assert quality["precision_agreement"] is None
    assert "<p id='precision-agreement'>Not applicable: the run ran in fp32.</p>" in page
    assert "<th>device (as run)</th><td>cpu (asked: cpu)</td>" in page
    assert re.search(r"<th>batch size \(as run\)</th><td>\d+</td>", page)

    # the guessed label, and the scores beside the baseline, as in quality.json
    assert quality["label_key"] == "cell_type" and quality["label_source"] == "guessed"
    assert "guessed obs[&#x27;cell_type&#x27;]: its name says it is an annotation" in page
    emb, pca = quality["embedding_scores"], quality["pca_scores"]
    assert f"<td>{emb['knn_accuracy']:.3f}</td><td>{pca['knn_accuracy']:.3f}</td>" in page
    assert pca["knn_accuracy"] > 0.7  # PCA separates the sample's PBMC types; the random fixture does not
    assert emb["knn_accuracy"] < pca["knn_accuracy"]
    assert "none: fixture weights carry no biology" in page and quality["passed"]

    # input QC and the rest
    assert re.search(r"<th>counts per cell</th><td>median [\d,]+ \(5%", page)
    assert "<th>genes in the model&#x27;s vocabulary</th><td>765 of 765 (100.0%)" in page
    assert "FIXTURE RUN" in page and 'alt="seconds per shard"' in page
    assert page.count("<tr><td>") >= 3 + 2  # 3 shard rows, 2 score rows
