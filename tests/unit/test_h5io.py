"""Streaming reads of .h5ad: row ranges equal the full matrix's rows for every layout anndata writes."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from types import ModuleType

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from helical_airflow import h5io

REPO = Path(__file__).resolve().parents[2]


def _random_adata(seed: int, n_cells: int = 57, n_genes: int = 23) -> ad.AnnData:
    """Random counts with some empty rows and columns, and obs columns of several encodings."""
    rng = np.random.default_rng(seed)
    x = rng.poisson(1.0, size=(n_cells, n_genes)) * (rng.random((n_cells, n_genes)) < 0.3)
    x[rng.choice(n_cells, 5, replace=False)] = 0
    x[:, rng.choice(n_genes, 3, replace=False)] = 0
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(rng.choice(["B", "T", "NK"], n_cells)),
            "score": rng.normal(size=n_cells),
            "label": [f"l{i % 7}" for i in range(n_cells)],
            "flag": rng.random(n_cells) < 0.5,
            "depth": pd.array(rng.integers(0, 9, n_cells), dtype="Int64"),
        },
        index=[f"c{i}" for i in range(n_cells)],
    )
    var = pd.DataFrame({"kind": ["gene"] * n_genes}, index=[f"G{i}" for i in range(n_genes)])
    return ad.AnnData(X=x.astype(np.int32), obs=obs, var=var)


def _write(adata: ad.AnnData, path: Path, fmt: str) -> Path:
    dense = np.asarray(adata.X)
    adata = adata.copy()
    adata.X = {"csr": sp.csr_matrix, "csc": sp.csc_matrix, "dense": np.asarray}[fmt](dense)
    adata.write_h5ad(path)
    return path


def _ranges(n: int, seed: int) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    edges = [(0, 0), (0, 1), (0, n), (n - 1, n), (n, n), (1, n - 1)]
    randoms = [tuple(sorted(rng.integers(0, n + 1, size=2).tolist())) for _ in range(5)]
    return edges + randoms  # type: ignore[return-value]


@pytest.mark.parametrize("fmt", ["csr", "csc", "dense"])
@pytest.mark.parametrize("seed", [0, 1])
def test_read_rows_equals_rows_of_the_full_matrix(tmp_path: Path, fmt: str, seed: int) -> None:
    adata = _random_adata(seed)
    path = _write(adata, tmp_path / f"{fmt}.h5ad", fmt)
    full = np.asarray(adata.X)
    with h5io.open_counts(path) as reader:
        assert (reader.n_cells, reader.n_genes, reader.format) == (*full.shape, fmt)
        assert reader.dtype == np.int32
        for start, stop in _ranges(full.shape[0], seed):
            rows = reader.read_rows(start, stop)
            assert sp.isspmatrix_csr(rows) and rows.shape == (stop - start, full.shape[1])
            np.testing.assert_array_equal(rows.toarray(), full[start:stop])


def test_csc_rows_are_collected_across_many_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    adata = _random_adata(3, n_cells=80, n_genes=31)
    path = _write(adata, tmp_path / "x.h5ad", "csc")
    monkeypatch.setattr(h5io, "BLOCK_ELEMENTS", 7)  # far fewer than the non-zeros: many blocks
    with h5io.open_counts(path) as reader:
        for start, stop in _ranges(80, 3):
            np.testing.assert_array_equal(reader.read_rows(start, stop).toarray(), np.asarray(adata.X)[start:stop])


def test_iter_values_visits_every_stored_value_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    adata = _random_adata(4)
    full = np.asarray(adata.X)
    monkeypatch.setattr(h5io, "BLOCK_ELEMENTS", 50)
    for fmt in ("csr", "dense"):
        with h5io.open_counts(_write(adata, tmp_path / f"{fmt}.h5ad", fmt)) as reader:
            values = np.concatenate(list(reader.iter_values()))
        expected = full.ravel() if fmt == "dense" else full[full != 0]
        np.testing.assert_array_equal(np.sort(values), np.sort(expected))


def test_out_of_range_rows_are_refused(tmp_path: Path) -> None:
    path = _write(_random_adata(0), tmp_path / "x.h5ad", "csr")
    with h5io.open_counts(path) as reader:
        for start, stop in [(-1, 3), (5, 4), (0, reader.n_cells + 1)]:
            with pytest.raises(ValueError):
                reader.read_rows(start, stop)


def test_layer_and_missing_matrix(tmp_path: Path) -> None:
    adata = _random_adata(5)
    counts = np.asarray(adata.X)
    adata.layers["counts"] = sp.csr_matrix(counts)
    adata.X = np.log1p(counts).astype(np.float32)
    path = tmp_path / "layers.h5ad"
    adata.write_h5ad(path)
    with h5io.open_counts(path, "counts") as reader:
        assert reader.source == "layers/counts"
        np.testing.assert_array_equal(reader.read_rows(3, 9).toarray(), counts[3:9])
    with pytest.raises(h5io.MatrixNotFoundError) as missing:
        h5io.open_counts(path, "raw_counts")
    assert missing.value.layers == ["counts"]

    ad.AnnData(obs=adata.obs, var=adata.var).write_h5ad(tmp_path / "nox.h5ad")
    with pytest.raises(h5io.MatrixNotFoundError):
        h5io.open_counts(tmp_path / "nox.h5ad")


def test_obs_slices_equal_the_whole_table_sliced(tmp_path: Path) -> None:
    adata = _random_adata(6)
    path = _write(adata, tmp_path / "x.h5ad", "csr")
    whole = h5io.read_obs(path)
    pd.testing.assert_frame_equal(whole, ad.read_h5ad(path).obs)
    for start, stop in _ranges(adata.n_obs, 6):
        pd.testing.assert_frame_equal(h5io.read_obs(path, start, stop), whole.iloc[start:stop])


def test_obs_column_rows_equal_the_whole_column_at_those_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The report's label read (only the pictured rows of one column) equals the whole table's column at those
    rows, for every encoding, across several read blocks; a file or column it cannot read that way says None."""
    adata = _random_adata(3)
    adata.obs["cell_type"] = adata.obs["cell_type"].cat.add_categories(["DC"])
    adata.obs.loc[adata.obs.index[[2, 40]], "cell_type"] = None  # missing values (code -1)
    adata.obs["name"] = [f"unique-{i}" for i in range(adata.n_obs)]  # stays a string array
    path = _write(adata, tmp_path / "x.h5ad", "csr")
    monkeypatch.setattr(h5io, "GATHER_ROWS", 8)  # 57 rows in 8 blocks; some blocks hold no wanted row
    whole = h5io.read_obs(path)
    rows = np.array([0, 2, 3, 9, 10, 11, 33, 40, 56])
    for key in ["cell_type", "score", "label", "flag", "depth", "name"]:
        got = h5io.read_obs_column_rows(path, key, rows)
        assert got is not None, key
        want = whole[key].to_numpy()[rows]
        assert len(got) == len(rows)
        assert [str(v) for v in got] == [str(v) for v in want], key
        assert list(pd.isna(got)) == list(pd.isna(want)), key
    assert h5io.read_obs_column_rows(path, "no_such_column", rows) is None
    # the label table (modality cells.label_table, the gate's): every column, no cell names
    pd.testing.assert_frame_equal(h5io.read_obs(path, names=False), whole.reset_index(drop=True))
    pd.testing.assert_frame_equal(h5io.read_obs(path, 5, 9, names=False), whole.iloc[5:9].set_axis(range(5, 9)))


def test_read_shard_is_the_same_cells_as_anndata_reads(tmp_path: Path, sample_h5ad: Path) -> None:
    full = ad.read_h5ad(sample_h5ad)
    shard = h5io.read_shard(sample_h5ad, 123, 321)
    np.testing.assert_array_equal(shard.X.toarray(), full.X[123:321].toarray())
    assert list(shard.obs_names) == list(full.obs_names[123:321]) and list(shard.var_names) == list(full.var_names)
    assert shard.obs.columns.empty and shard.var.columns.empty  # a shard reads no obs/var column
    pd.testing.assert_frame_equal(h5io.read_obs(sample_h5ad, 123, 321), full.obs.iloc[123:321])
    pd.testing.assert_frame_equal(h5io.read_obs(sample_h5ad, 123, 321, columns=["cell_type"]),
                                  full.obs.iloc[123:321][["cell_type"]])  # fmt: skip
    pd.testing.assert_frame_equal(h5io.read_var(sample_h5ad), full.var)


def test_sha256_streams_in_chunks_and_matches_hashlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blob = np.random.default_rng(7).bytes(10_000)
    path = tmp_path / "blob.bin"
    path.write_bytes(blob)
    monkeypatch.setattr(h5io, "HASH_CHUNK", 999)
    assert h5io.sha256_file(path) == hashlib.sha256(blob).hexdigest()
    path.write_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))
    assert h5io.sha256_file(path) != hashlib.sha256(blob).hexdigest()


def _synth() -> ModuleType:
    spec = importlib.util.spec_from_file_location("synth", REPO / "bench" / "synth.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_synthetic_writer_makes_the_same_counts_in_csr_and_dense(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synth = _synth()
    monkeypatch.setattr(synth, "CHUNK_ELEMENTS", 1000)  # many chunks of rows
    genes = synth.fixture_genes()[:120]
    csr = synth.write_synthetic_h5ad(tmp_path / "s.h5ad", 301, genes, genes_per_cell=30, format="csr", seed=2)
    dense = synth.write_synthetic_h5ad(tmp_path / "d.h5ad", 301, genes, genes_per_cell=30, format="dense", seed=2)
    a, b = ad.read_h5ad(csr), ad.read_h5ad(dense)
    assert sp.issparse(a.X) and isinstance(b.X, np.ndarray)
    np.testing.assert_array_equal(a.X.toarray(), b.X)
    assert list(a.var_names) == genes and a.n_obs == 301
    per_cell = (b.X > 0).sum(axis=1)
    assert per_cell.min() >= 1 and 20 < per_cell.mean() < 40
    with h5py.File(csr, "r") as h5:
        assert h5["X"].attrs["encoding-type"] == "csr_matrix"
    other = synth.write_synthetic_h5ad(tmp_path / "o.h5ad", 301, genes, genes_per_cell=30, seed=3)
    assert (ad.read_h5ad(other).X != a.X).nnz > 0
