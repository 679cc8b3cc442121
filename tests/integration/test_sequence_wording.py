"""A sequence input's rows are records, not cells: `plan`, `embed-shard`, `run` and `merge` on a FASTA print
"records" and never "cells" (progress bar, log lines, summary table), and its report.html says records too.
The data model keeps its cell names (ShardSpec.cells, manifest total_cells: they count records here)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helical_airflow.spec import InputSummary

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample_dna.fa"
FAMILY = "hyena_dna"  # CPU, with an offline fixture
CELLS = re.compile(r"\bcells?\b", re.IGNORECASE)


def _cli(*args: str, env: dict[str, str]) -> tuple[str, str]:
    """(stdout, stdout + stderr) of a CLI command that must succeed."""
    done = subprocess.run([sys.executable, "-m", "helical_airflow.cli", *args], capture_output=True, text=True,
                          env=env, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout, done.stdout + done.stderr


@pytest.fixture(scope="module")
def hyena_cache(fixture_cache: str) -> str:
    """The session's fixture cache (built once for the suite; it has HyenaDNA)."""
    return fixture_cache


def test_input_summary_unit_is_records_only_for_sequence_inputs() -> None:
    base = {"path": "x", "sha256": "0", "size_bytes": 1, "n_cells": 2, "n_genes": 3, "x_source": "X",
            "x_format": "dense", "dtype": "float32", "gene_id_kind": "symbol", "genes_in_vocab": 3,
            "vocab_overlap": 1.0}  # fmt: skip
    assert InputSummary(**base).unit == "cells"


def test_a_sequence_run_says_records_never_cells(hyena_cache: str, tmp_path: Path) -> None:
    blocks = SAMPLE.read_text().split(">")[1:7]  # 6 records of the sample: seconds on a shared CPU
    fasta = tmp_path / "six.fa"
    fasta.write_text("".join(f">{b}" for b in blocks))
    env = {**os.environ, "HELICAL_AIRFLOW_REPORT_UMAP": "0", "HELICAL_AIRFLOW_SEQ_INDEX_DIR": str(tmp_path / "index"),
           "COLUMNS": "200"}  # fmt: skip
    common = ["--model", FAMILY, "--shard-size", "3", "--device", "cpu", "--cache-dir", hyena_cache,
              "--out", str(tmp_path / "out")]  # fmt: skip
    plan_out, planned = _cli("plan", str(fasta), *common, env=env)
    plan_path = plan_out.strip().splitlines()[-1]
    assert "2 shards of up to 3 records" in planned
    _, embedded = _cli("embed-shard", "--plan", plan_path, "--shard", "0", env=env)  # shard 1 is left for `run`
    assert "embedded 3 records in" in embedded
    _, ran = _cli("run", str(fasta), *common, env=env)
    assert re.search(r"shard 1: \d+ records/s", ran) and re.search(r"│ records\s+│ 6\s+│", ran), ran
    _, merged = _cli("merge", "--plan", plan_path, env=env)
    assert "merged 6 records from 2 shards" in merged
    for name, text in (("plan", planned), ("embed-shard", embedded), ("run", ran), ("merge", merged)):
        assert not CELLS.search(text), f"`{name}` of a FASTA says cells: {CELLS.findall(text)}\n{text[-3000:]}"

    report = (Path(plan_path).parent / "report.html").read_text()
    text = re.sub(r"<[^>]+>", " ", re.sub(r'src="data:[^"]*"', "", report))  # the words, not markup or images
    assert "records embedded" in text and "one row per record" in text
    found = [text[max(0, m.start() - 40) : m.end() + 40] for m in CELLS.finditer(text)]
    assert found == [], f"report.html of a FASTA says cells: {found}"


@pytest.mark.parametrize("unit", ["cells", "records"])
def test_quality_messages_name_the_unit(unit: str) -> None:
    import numpy as np

    from helical_airflow.quality import assess

    x = np.ones((20, 4))
    x[0, 0] = np.nan
    problems = " ".join(assess(x, 20, unit=unit).problems)
    assert unit in problems and ({"cells", "records"} - {unit}).pop() not in problems
