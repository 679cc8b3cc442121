"""merge writes embeddings.h5ad in row blocks streamed from the shard files (store.ShardedEmbeddings): the file must
read back exactly as the whole-matrix write (`adata.obsm[key] = np.concatenate(shards)`) did, and the quality
gate's statistics from blocks must equal the whole-matrix ones. Blocks are made smaller than a shard and shards of
unequal sizes, so block edges, shard edges and the last short block all occur."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest

from helical_airflow import quality, store
from helical_airflow.plan import resolve_params
from helical_airflow.spec import InputSummary, Plan, RunParams, ShardResult, ShardSpec

SHARDS = [(0, 10), (10, 20), (20, 23)]  # 23 cells in three shards, the last one short
DIM = 6


def _plan(tmp_path: Path, embeddings: np.ndarray) -> Plan:
    n = len(embeddings)
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical(np.array(["T", "B", "NK"])[np.arange(n) % 3]), "n_counts": np.arange(n) * 1.5},
        index=[f"cell_{i}" for i in range(n)],
    )
    source = tmp_path / "input.h5ad"
    ad.AnnData(obs=obs, var=pd.DataFrame(index=["G1", "G2"])).write_h5ad(source)
    summary = InputSummary(
        path=str(source), sha256="0" * 64, size_bytes=1, n_cells=n, n_genes=2, x_source="X", x_format="csr",
        dtype="int32", gene_id_kind="symbol", genes_in_vocab=2, vocab_overlap=1.0,
    )  # fmt: skip
    plan = Plan(
        run_key="0123456789abcdef", dataset="input", out_dir=str(tmp_path / "run"), input=summary,
        params=resolve_params(RunParams(model="geneformer", precision="fp32", batch_size=8, engine="helical")),
        model_family="geneformer", helical_model_name="gf-12L-38M-i4096", fixture=True, weights_checksum="w",
        code_version="c", shards=[ShardSpec(index=i, start=a, stop=b) for i, (a, b) in enumerate(SHARDS)],
        created_at="now",
    )  # fmt: skip
    for shard in plan.shards:
        store.save_npy(plan.shard_file(shard.index), embeddings[shard.start : shard.stop])
        result = ShardResult(
            index=shard.index, start=shard.start, stop=shard.stop, cells=shard.cells, embedding_dim=DIM, seconds=1.0,
            model_load_seconds=0.5, peak_rss_mb=100.0, device="cpu", precision="fp32", engine="helical", host="h",
            finished_at="now",
        )  # fmt: skip
        store.write_json(plan.shard_result_file(shard.index), result)
    return plan


@pytest.fixture
def embeddings() -> np.ndarray:
    return np.random.default_rng(7).normal(size=(sum(b - a for a, b in SHARDS), DIM)).astype(np.float32)


def test_row_block_merge_equals_the_whole_matrix_merge(
    tmp_path: Path, embeddings: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = _plan(tmp_path, embeddings)
    monkeypatch.setattr(store, "BLOCK_VALUES", 4 * DIM)  # 4 rows a block: smaller than every shard
    assert [len(b) for _, b in store.ShardedEmbeddings(plan).blocks()] == [4, 4, 2, 4, 4, 2, 3]
    store.merge(plan)

    whole = ad.AnnData(obs=plan_obs(plan))
    whole.obsm[store.embeddings_key(plan)] = np.concatenate([np.load(plan.shard_file(s.index)) for s in plan.shards])
    whole.uns["helical_airflow"] = {"run_key": plan.run_key, "model": plan.params.model, "fixture": plan.fixture,
                                    "manifest": "manifest.json"}  # fmt: skip
    whole.write_h5ad(tmp_path / "whole.h5ad")

    merged, expected = ad.read_h5ad(plan.out_path / "embeddings.h5ad"), ad.read_h5ad(tmp_path / "whole.h5ad")
    pd.testing.assert_frame_equal(merged.obs, expected.obs)
    assert list(merged.obsm) == list(expected.obsm) == ["X_geneformer"]
    np.testing.assert_array_equal(merged.obsm["X_geneformer"], embeddings)
    assert merged.obsm["X_geneformer"].dtype == np.float32
    assert merged.uns["helical_airflow"] == expected.uns["helical_airflow"]
    with h5py.File(plan.out_path / "embeddings.h5ad") as a, h5py.File(tmp_path / "whole.h5ad") as b:
        names_a, names_b = [], []
        a.visit(names_a.append)
        b.visit(names_b.append)
        assert sorted(names_a) == sorted(names_b)  # the same groups and datasets, nothing more, nothing less
        assert dict(a["obsm/X_geneformer"].attrs) == dict(b["obsm/X_geneformer"].attrs)


def plan_obs(plan: Plan) -> pd.DataFrame:
    from helical_airflow import modality

    return modality.of(plan.input).metadata(plan.input)


def test_rows_gathered_by_index_and_streamed_gate_statistics(
    tmp_path: Path, embeddings: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    embeddings[12, 3] = np.nan  # one non-finite row: counted, and read as 0 by the spread numbers
    plan = _plan(tmp_path, embeddings)
    monkeypatch.setattr(store, "BLOCK_VALUES", 4 * DIM)
    on_disk = store.ShardedEmbeddings(plan)
    rows = np.array([22, 0, 9, 10, 9, -1, 15])  # unsorted, repeated, negative, across every shard edge
    np.testing.assert_array_equal(on_disk[rows], embeddings[rows])
    np.testing.assert_array_equal(np.asarray(on_disk), embeddings)
    with pytest.raises(IndexError):
        on_disk[np.array([23])]
    streamed, whole = quality.assess(on_disk, 23), quality.assess(embeddings, 23)
    assert streamed.problems == whole.problems and streamed.all_finite is whole.all_finite is False
    for field in ("mean_norm", "min_std_over_dims", "mean_pairwise_cosine", "distinct_fraction"):
        assert getattr(streamed, field) == pytest.approx(getattr(whole, field), rel=1e-12), field
    assert streamed.cosine_sample_cells == whole.cosine_sample_cells == 23


def test_merge_copies_the_input_obs_as_anndata_reads_it(tmp_path: Path, embeddings: np.ndarray) -> None:
    """merge copies an .h5ad input's obs group with HDF5 (store.copyable_obs): the merged file must read with
    anndata exactly as the input's obs does, whatever the columns' encodings (categorical with a missing value,
    plain strings, nullable integers and booleans, floats), the index name and the input's compression."""
    plan = _plan(tmp_path, embeddings)
    n = len(embeddings)
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(["T", "B", None, "NK"] * 5 + ["T", "B", "B"], categories=["NK", "T", "B"]),
            "donor": [f"d{i % 4}-{i}" for i in range(n)],  # unique strings: anndata keeps them a string array
            "n_genes": pd.array([i if i % 5 else None for i in range(n)], dtype="Int64"),
            "doublet": pd.array([bool(i % 2) if i % 7 else None for i in range(n)], dtype="boolean"),
            "score": np.linspace(0, 1, n, dtype=np.float32),
        },
        index=pd.Index([f"AAAC-{i}" for i in range(n)], name="barcode"),
    )
    ad.AnnData(obs=obs, var=pd.DataFrame(index=["G1", "G2"])).write_h5ad(plan.input.path, compression="gzip")
    assert store.copyable_obs(plan.input.path) == Path(plan.input.path)
    store.merge(plan)
    merged, source = ad.read_h5ad(plan.out_path / "embeddings.h5ad"), ad.read_h5ad(plan.input.path)
    pd.testing.assert_frame_equal(merged.obs, source.obs)
    assert merged.obs.index.name == "barcode" and merged.obs["donor"].dtype == object
    np.testing.assert_array_equal(merged.obsm["X_geneformer"], embeddings)
    assert merged.shape == (n, 0) and merged.uns["helical_airflow"]["run_key"] == plan.run_key


def test_merge_refuses_shards_that_disagree_with_the_copied_obs(tmp_path: Path, embeddings: np.ndarray) -> None:
    plan = _plan(tmp_path, embeddings)
    ad.AnnData(obs=pd.DataFrame(index=[f"c{i}" for i in range(5)]), var=pd.DataFrame(index=["G1"])).write_h5ad(
        plan.input.path
    )
    with pytest.raises(store.ShardError, match="23 embedding rows for 5 rows of metadata"):
        store.merge(plan)
