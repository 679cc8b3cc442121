"""Sequence families through helical's real code on the offline fixture (tiny random weights in helical's layout):
`helical-airflow run <sample>.fa --model <family>` writes one finite embedding per record, in input order;
sharded == unsharded; the same records as FASTA, gzip FASTA, CSV and Parquet give the same embeddings; a record
longer than the context, windowed, is the mean of its windows' embeddings; distinct records get distinct vectors.

CPU-capable families only: Caduceus and Evo 2 need CUDA (their FAMILY.cpu_unsupported; E228 is checked in
tests/unit/test_seqio.py). RNA families (Helix-mRNA, Mamba2-mRNA) read the DNA sample transcribed (T -> U, soft
masking kept): real sequence, not real mRNA; data/ ships no RNA sample."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pytest

from helical_airflow import pipeline
from helical_airflow.models import registry
from helical_airflow.models.fixture import build_fixture
from helical_airflow.seqio import alphabet_for
from helical_airflow.spec import RunParams

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample_dna.fa"
CPU_FAMILIES = [name for name, f in registry.FAMILIES.items() if f.models[0].is_sequence and not f.cpu_unsupported]
#: windowing runs a record of twice the context: families whose context is long (8k-12k nucleotides) would make that
#: minutes on a CPU; the windowing is SequenceRunner's, the same for every family, and tested on the others
WINDOW_FAMILIES = [name for name in CPU_FAMILIES if (registry.FAMILIES[name].models[0].max_length or 0) <= 4096]
N = 10  # records used (of the sample's 40): keeps each run to seconds on a shared CPU


def _rna(family: str) -> bool:
    return "U" in alphabet_for(registry.get_model(family))


def _transcribed(text: str) -> str:
    """DNA -> RNA letters (T -> U, t -> u), FASTA headers left alone."""
    return "".join(line if line.startswith(">") else line.translate(str.maketrans("Tt", "Uu"))
                   for line in text.splitlines(keepends=True))  # fmt: skip


def _records(n: int = N, rna: bool = False) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    text = SAMPLE.read_text()
    for block in (_transcribed(text) if rna else text).split(">")[1:]:
        header, *lines = block.splitlines()
        out.append((header.split()[0], "".join(lines)))
    return out[:n]


def _name(family: str, name: str) -> str:
    """The test input `name` (r.fa, r.csv, ...) in the family's alphabet."""
    return f"rna_{name}" if _rna(family) else name


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, fixture_cache: str) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("seq")
    # the session's fixture cache (it has every fixture family): helical reads its cache prefix once per process,
    # and other tests in this process may have imported it with that cache already
    cache = Path(fixture_cache)
    build_fixture(cache, families=CPU_FAMILIES)  # already there: writes nothing
    os.environ["HELICAL_AIRFLOW_SEQ_INDEX_DIR"] = str(root / "index")
    os.environ["HELICAL_AIRFLOW_REPORT_UMAP"] = "0"
    import pyarrow as pa
    import pyarrow.parquet as pq

    for prefix, rna in (("", False), ("rna_", True)):
        records = _records(rna=rna)
        fasta = "".join(f">{i} hg19\n" + "\n".join(s[j : j + 60] for j in range(0, len(s), 60)) + "\n"
                        for i, s in records)  # fmt: skip
        (root / f"{prefix}r.fa").write_text(fasta)
        (root / f"{prefix}r.fa.gz").write_bytes(gzip.compress(fasta.encode(), mtime=0))
        (root / f"{prefix}r.csv").write_text(
            "id,sequence,label\n" + "".join(f"{i},{s},L{n % 2}\n" for n, (i, s) in enumerate(records))
        )
        table = pa.table({"id": [i for i, _ in records], "sequence": [s for _, s in records],
                          "label": [f"L{n % 2}" for n in range(len(records))]})  # fmt: skip
        pq.write_table(table, root / f"{prefix}r.parquet", row_group_size=3)
    (root / "rna_sample.fa").write_text(_transcribed(SAMPLE.read_text()))
    return {"root": root, "cache": cache}


def _run(env: dict[str, Path], name: str, family: str, shard_size: int, **options: str) -> ad.AnnData:
    name = _name(family, name)
    params = RunParams(model=family, shard_size=shard_size, device="cpu", cache_dir=str(env["cache"]), options=options)
    manifest = pipeline.run(env["root"] / name, params, env["root"] / "out")
    out = Path(manifest.outputs.get("embeddings", "")) if manifest.outputs.get("embeddings") else None
    folder = next(p for p in (env["root"] / "out" / manifest.dataset).iterdir() if (p / "manifest.json").is_file()
                  and json.loads((p / "manifest.json").read_text())["run_key"] == manifest.run_key)  # fmt: skip
    assert out is None or out.name == "embeddings.h5ad"
    return ad.read_h5ad(folder / "embeddings.h5ad")


@pytest.mark.parametrize("family", CPU_FAMILIES)
def test_sharded_equals_unsharded_in_input_order_and_formats_agree(env: dict[str, Path], family: str) -> None:
    key = f"X_{family}"
    whole = _run(env, "r.fa", family, shard_size=100)
    records = _records(rna=_rna(family))
    ids = [i for i, _ in records]
    assert list(whole.obs["id"]) == ids and list(whole.obs["length"]) == [len(s) for _, s in records]
    x = whole.obsm[key]
    assert x.shape[0] == N and np.isfinite(x).all() and np.linalg.norm(x, axis=1).min() > 0
    # distinct records, distinct vectors (helical's own Mamba2-mRNA pooling gave all 10 the same one)
    gaps = np.abs(x[:, None, :] - x[None, :, :]).max(axis=-1)[np.triu_indices(N, 1)]
    assert gaps.min() > 1e-3, gaps.min()
    sharded = _run(env, "r.fa", family, shard_size=3)
    np.testing.assert_allclose(sharded.obsm[key], x, atol=registry.FAMILIES[family].shard_atol, rtol=0)
    for name in ("r.fa.gz", "r.csv", "r.parquet"):
        other = _run(env, name, family, shard_size=4)
        assert list(other.obs["id"]) == ids, name
        np.testing.assert_allclose(other.obsm[key], x, atol=1e-5, rtol=0, err_msg=name)
    assert list(_run(env, "r.csv", family, shard_size=4).obs["label"][:2]) == ["L0", "L1"]


@pytest.mark.parametrize("family", WINDOW_FAMILIES)
def test_windows_are_mean_pooled(env: dict[str, Path], family: str) -> None:
    context = registry.get_model(family).max_length
    assert context
    seq = "".join(s for _, s in _records(40, rna=_rna(family)))[: context * 2 + 100].upper()
    windows = [seq[i : i + context] for i in range(0, len(seq), context)]
    fasta = f">long\n{seq}\n" + "".join(f">w{i}\n{w}\n" for i, w in enumerate(windows))
    (env["root"] / _name(family, "long.fa")).write_text(fasta)
    out = _run(env, "long.fa", family, shard_size=2, too_long="window").obsm[f"X_{family}"]
    np.testing.assert_allclose(out[0], out[1:].mean(axis=0), atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", CPU_FAMILIES)
def test_cli_run_on_the_sample(env: dict[str, Path], family: str, tmp_path: Path) -> None:
    sample = env["root"] / "rna_sample.fa" if _rna(family) else SAMPLE
    done = subprocess.run(
        [sys.executable, "-m", "helical_airflow.cli", "run", str(sample), "--model", family, "--cache-dir",
         str(env["cache"]), "--out", str(tmp_path), "--shard-size", "16", "--device", "cpu"],
        capture_output=True, text=True, timeout=600, env={**os.environ},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    dataset = tmp_path / sample.name.removesuffix(".fa")  # the dataset: the file's name less its suffix
    (folder,) = [p for p in dataset.iterdir() if not p.is_symlink()]
    assert (dataset / "latest").resolve() == folder.resolve()  # `latest` follows a CLI run
    adata = ad.read_h5ad(folder / "embeddings.h5ad")
    assert adata.n_obs == 40 and np.isfinite(adata.obsm[f"X_{family}"]).all()
    import pyarrow.parquet as pq

    table = pq.read_table(folder / "embeddings.parquet")
    assert table.column("id").to_pylist() == list(adata.obs["id"])
    np.testing.assert_array_equal(np.stack(table.column("embedding").to_numpy(zero_copy_only=False)),
                                  adata.obsm[f"X_{family}"])  # fmt: skip
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["fixture"] is True and manifest["input"]["sequence"]["format"] == "fasta"
    assert manifest["total_cells"] == 40 and (folder / "report.html").is_file()


def test_a_sequence_run_fails_thresholds_it_cannot_meet(
    env: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Thresholds apply to sequence runs too (issue 18: the gate dropped them on the sequence path). A silhouette of
    1.0 needs every record to sit on its label's point: random fixture weights cannot, so the gate fails (E401),
    after writing quality.json with the scores and the thresholds it applied."""
    from helical_airflow import settings
    from helical_airflow.quality import QualityGateError

    family = CPU_FAMILIES[0]
    params = RunParams(model=family, shard_size=4, device="cpu", cache_dir=str(env["cache"]))
    monkeypatch.setenv("HELICAL_AIRFLOW_QUALITY_THRESHOLDS", json.dumps({"min_silhouette": 1.0}))
    settings.reload()
    try:
        with pytest.raises(QualityGateError) as err:
            pipeline.run(env["root"] / _name(family, "r.csv"), params, tmp_path, label_key="label")
    finally:
        monkeypatch.delenv("HELICAL_AIRFLOW_QUALITY_THRESHOLDS")
        settings.reload()
    assert err.value.code == "E401" and "silhouette on obs['label']" in err.value.message
    (quality,) = tmp_path.glob("*/*/quality.json")
    report = json.loads(quality.read_text())
    assert report["passed"] is False and report["thresholds"]["min_silhouette"] == 1.0
    assert report["embedding_scores"]["silhouette"] < 1.0 and report["pca_scores"] is None
    assert report["baseline"].startswith("none") and report["scored_cells"] == N


@pytest.mark.parametrize("family", [name for name in CPU_FAMILIES if _rna(name)])
def test_an_rna_model_embeds_dna_letters_as_their_u_twin(env: dict[str, Path], family: str, tmp_path: Path) -> None:
    """An mRNA FASTA in DNA letters (as Ensembl's and RefSeq's cDNA files are) and the same records in U letters give
    the same embeddings through the real adapter (T read as U, as helical's tokenizers do), and the manifest records
    what was read as what."""
    key = f"X_{family}"
    embedded: dict[str, np.ndarray] = {}
    for name in ("r.fa", "rna_r.fa"):  # DNA letters, and the twin the env fixture transcribed (T -> U)
        params = RunParams(model=family, shard_size=4, device="cpu", cache_dir=str(env["cache"]))
        manifest = pipeline.run(env["root"] / name, params, tmp_path)
        folder = tmp_path / manifest.dataset / manifest.run_key
        embedded[name] = ad.read_h5ad(folder / "embeddings.h5ad").obsm[key]
        sequence = json.loads((folder / "manifest.json").read_text())["input"]["sequence"]
        if name == "r.fa":
            dna = [s for _, s in _records()]
            assert sequence["read_as"] == {"T": "U"} and sequence["n_read_as"] == sum("T" in s.upper() for s in dna)
            assert sequence["nucleotides_read_as"] == sum(s.upper().count("T") for s in dna) > 0
        else:
            assert (sequence["read_as"], sequence["n_read_as"], sequence["nucleotides_read_as"]) == ({}, 0, 0)
    assert embedded["r.fa"].shape == (N, embedded["r.fa"].shape[1])
    np.testing.assert_array_equal(embedded["r.fa"], embedded["rna_r.fa"])
