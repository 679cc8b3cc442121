"""End to end through the real CLI and helical's real code, on the offline fixture cache."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pytest

from helical_airflow.pipeline import run
from helical_airflow.spec import RunParams

CLI = [sys.executable, "-m", "helical_airflow.cli"]


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"helical-airflow {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="module")
def subset_h5ad(sample_h5ad: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 120 sample cells: enough for several shards, quick on two cores."""
    path = tmp_path_factory.mktemp("subset") / "pbmc120.h5ad"
    ad.read_h5ad(sample_h5ad)[:120].copy().write_h5ad(path)
    return path


def only_run_dir(out: Path) -> Path:
    dirs = [p for p in out.glob("*/*") if (p / "plan.json").is_file() and not p.is_symlink()]  # not <dataset>/latest
    assert len(dirs) == 1, dirs
    return dirs[0]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["geneformer", "scgpt"])
def test_cli_run_embeds_every_cell_of_the_sample(
    model: str, sample_h5ad: Path, fixture_cache: str, tmp_path: Path
) -> None:
    before = sample_h5ad.read_bytes()
    proc = cli(
        "run",
        str(sample_h5ad),
        "--model",
        model,
        "--cache-dir",
        fixture_cache,
        "--shard-size",
        "300",
        "--out",
        str(tmp_path),
    )
    assert sample_h5ad.read_bytes() == before, "the input must never be written to"
    # one fixture warning per run, not one per shard (3 before); the shard's own goes to run.log
    assert proc.stderr.count("embeddings carry no biology") == 1, proc.stderr[-3000:]
    run_dir = only_run_dir(tmp_path)
    source = ad.read_h5ad(sample_h5ad)
    result = ad.read_h5ad(run_dir / "embeddings.h5ad")
    key = f"X_{model}"
    assert result.obs.equals(source.obs)
    assert result.obsm[key].shape[0] == source.n_obs == 700
    assert np.isfinite(result.obsm[key]).all()

    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["fixture"] is True and "FIXTURE" in manifest["fixture_note"]
    assert manifest["input"]["sha256"] == __import__("hashlib").sha256(before).hexdigest()
    assert manifest["total_cells"] == 700 and [s["cells"] for s in manifest["shards"]] == [300, 300, 100]
    assert all(s["seconds"] > 0 and s["peak_rss_mb"] > 0 for s in manifest["shards"])
    assert len(manifest["weights_checksum"]) == 64
    assert manifest["versions"]["helical"] == "3.1.4"
    assert manifest["quality"]["passed"] is True
    assert manifest["run_key"] == run_dir.name
    report = (run_dir / "report.html").read_text()
    assert "FIXTURE RUN" in report and "data:image/png;base64," in report


@pytest.mark.slow
@pytest.mark.parametrize("model", ["geneformer", "scgpt"])
def test_sharded_run_equals_single_shard_run(model: str, subset_h5ad: Path, fixture_cache: str, tmp_path: Path) -> None:
    def embed(shard_size: int) -> np.ndarray:
        params = RunParams(model=model, shard_size=shard_size, device="cpu", cache_dir=fixture_cache)
        manifest = run(subset_h5ad, params, tmp_path / str(shard_size))
        path = tmp_path / str(shard_size) / manifest.dataset / manifest.run_key / "embeddings.h5ad"
        return ad.read_h5ad(path).obsm[f"X_{model}"]

    whole, sharded = embed(120), embed(35)
    assert whole.shape == sharded.shape == (120, whole.shape[1])
    np.testing.assert_allclose(sharded, whole, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_killed_run_resumes_and_redoes_only_missing_shards(
    subset_h5ad: Path, fixture_cache: str, tmp_path: Path
) -> None:
    args = [
        "run",
        str(subset_h5ad),
        "--model",
        "geneformer",
        "--cache-dir",
        fixture_cache,
        "--shard-size",
        "2",  # 60 shards: with the fast engine a shard of the tiny fixture takes milliseconds, and the
        "--device",  # kill must land while most of them are still to do
        "cpu",
        "--out",
        str(tmp_path / "killed"),
    ]
    n_shards = 60
    proc = subprocess.Popen([*CLI, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 600
    first_record = None
    while time.monotonic() < deadline and proc.poll() is None:
        first_record = next((tmp_path / "killed").glob("*/*/shards/0.json"), None)
        if first_record is not None:
            break
        time.sleep(0.02)
    assert first_record is not None, "shard 0 never finished"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    shards_dir = first_record.parent
    done_before = {p.name: p.stat().st_mtime_ns for p in shards_dir.glob("*.npy")}
    assert "0.npy" in done_before and len(done_before) < n_shards, "the kill must land before the run finished"
    assert not (shards_dir.parent / "manifest.json").exists()

    cli(*args)  # same command again: resumes
    after = {p.name: p.stat().st_mtime_ns for p in shards_dir.glob("*.npy")}
    assert sorted(after) == sorted(f"{i}.npy" for i in range(n_shards))
    assert all(after[name] == mtime for name, mtime in done_before.items()), "finished shards must be reused"

    cli("run", *args[1:-1], str(tmp_path / "clean"))  # the same run, never interrupted
    resumed = ad.read_h5ad(shards_dir.parent / "embeddings.h5ad").obsm["X_geneformer"]
    clean = ad.read_h5ad(only_run_dir(tmp_path / "clean") / "embeddings.h5ad").obsm["X_geneformer"]
    np.testing.assert_allclose(resumed, clean, atol=1e-6, rtol=0)


@pytest.mark.slow
def test_cli_run_prints_the_bar_one_fixture_warning_and_the_table(
    subset_h5ad: Path, fixture_cache: str, tmp_path: Path
) -> None:
    """A quiet run: what a user needs on the console, the details in the run folder's run.log. Before, the
    sample job printed 382 lines (552 with the fixture build): INFO lines of ours and helical's, one fixture
    warning per shard, transformers' weights bar."""
    proc = cli("run", str(subset_h5ad), "--model", "geneformer", "--cache-dir", fixture_cache, "--shard-size", "40",
               "--device", "cpu", "--out", str(tmp_path))  # fmt: skip
    printed = (proc.stdout + proc.stderr).splitlines()
    assert sum("embeddings carry no biology" in line for line in printed) == 1, printed
    assert len(printed) <= 22, "\n".join(printed)  # run line, fixture warning, bar, 16-line table (12 rows)
    assert not any(" INFO " in line or "Loading weights" in line for line in printed), printed
    assert any(line.startswith("embedding ") and "120/120" in line for line in printed), printed
    assert "helical-airflow run" in proc.stdout and "geneformer (FIXTURE)" in proc.stdout
    (run_dir,) = [p for p in tmp_path.glob("*/*") if (p / "plan.json").is_file() and not p.is_symlink()]
    assert "│ log " in proc.stdout and str(run_dir / "run.log") in proc.stdout
    details = (run_dir / "run.log").read_text()
    # the details went to the file: the model load, helical's own lines and the shard's fixture warning, once
    assert "model geneformer loaded on cpu" in details and "helical.models.geneformer" in details
    assert details.count("FIXTURE model: random weights") == 1, details

    again = cli("run", str(subset_h5ad), "--model", "geneformer", "--cache-dir", fixture_cache, "--shard-size",
                "40", "--device", "cpu", "--out", str(tmp_path))  # fmt: skip
    assert sum("embeddings carry no biology" in line for line in (again.stdout + again.stderr).splitlines()) == 1
    assert "outputs in" in (run_dir / "run.log").read_text()  # appended: "every shard was already done; ..."


def test_failed_validation_writes_nothing_and_explains(tmp_path: Path, fixture_cache: str) -> None:
    missing = tmp_path / "nope.h5ad"
    proc = cli(
        "run",
        str(missing),
        "--model",
        "geneformer",
        "--cache-dir",
        fixture_cache,
        "--out",
        str(tmp_path / "out"),
        check=False,
    )
    assert proc.returncode == 2
    assert "error E1" in proc.stderr and "fix:" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_unknown_model_lists_the_known_ones(sample_h5ad: Path, tmp_path: Path) -> None:
    proc = cli("validate", str(sample_h5ad), "--model", "genefromer", check=False)
    assert proc.returncode == 2 and "E201" in proc.stderr and "geneformer" in proc.stderr
