"""Every validation failure has its code, leaves the input byte-identical and writes nothing."""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pytest
import scipy.sparse as sp

from helical_airflow import h5io
from helical_airflow.errors import ConfigError, InputValidationError
from helical_airflow.models import get_model, registry
from helical_airflow.validate import CODES, detect_gene_id_kind, validate_input

MODEL = "geneformer"


def _load(sample: Path) -> ad.AnnData:
    return ad.read_h5ad(sample)


def _tree(root: Path) -> dict[str, str]:
    """Every file (with its sha256) and folder under root: what 'nothing changed' means."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
        for p in root.rglob("*")
    }


# Each builder makes one bad input in `d` from the real sample and returns its path.
def _missing(d: Path, sample: Path) -> Path:
    return d / "nope.h5ad"


def _directory(d: Path, sample: Path) -> Path:
    (d / "folder.h5ad").mkdir()
    return d / "folder.h5ad"


def _csv(d: Path, sample: Path) -> Path:
    path = d / "counts.h5ad"
    path.write_text("gene,cell1\nCD3E,4\n")
    return path


def _empty(d: Path, sample: Path) -> Path:
    path = d / "empty.h5ad"
    path.touch()
    return path


def _truncated(fraction: float) -> Callable[[Path, Path], Path]:
    def build(d: Path, sample: Path) -> Path:
        path = d / "cut.h5ad"
        blob = sample.read_bytes()
        path.write_bytes(blob[: int(len(blob) * fraction)])
        return path

    return build


def _no_x(d: Path, sample: Path) -> Path:
    adata = _load(sample)
    ad.AnnData(obs=adata.obs, var=adata.var, layers={"spliced": adata.X}).write_h5ad(d / "nox.h5ad")
    return d / "nox.h5ad"


def _odd_x(d: Path, sample: Path) -> Path:
    path = _copy(d, sample)
    with h5py.File(path, "a") as h5:
        del h5["X"]
        h5.create_group("X").create_dataset("values", data=np.arange(3))
    return path


def _zero_cells(d: Path, sample: Path) -> Path:
    adata = _load(sample)
    adata[:0].copy().write_h5ad(d / "nocells.h5ad")
    return d / "nocells.h5ad"


def _zero_genes(d: Path, sample: Path) -> Path:
    adata = _load(sample)
    adata[:, :0].copy().write_h5ad(d / "nogenes.h5ad")
    return d / "nogenes.h5ad"


def _edit_values(change: Callable[[np.ndarray], np.ndarray], dense: bool = False) -> Callable[[Path, Path], Path]:
    """The sample with its counts as float32, changed by `change` (in the middle of the matrix)."""

    def build(d: Path, sample: Path) -> Path:
        adata = _load(sample)
        x = adata.X.toarray().astype(np.float32)
        x = change(x)
        adata.X = x if dense else sp.csr_matrix(x)
        adata.write_h5ad(d / "values.h5ad")
        return d / "values.h5ad"

    return build


def _set(value: float) -> Callable[[np.ndarray], np.ndarray]:
    def change(x: np.ndarray) -> np.ndarray:
        x[400, np.flatnonzero(x[400])[:3]] = value
        return x

    return change


def _duplicate_genes(d: Path, sample: Path) -> Path:
    adata = _load(sample)
    names = list(adata.var_names)
    names[10] = names[3]
    adata.var_names = names
    adata.write_h5ad(d / "dups.h5ad")
    return d / "dups.h5ad"


def _unknown_genes(d: Path, sample: Path) -> Path:
    adata = _load(sample)
    adata.var_names = [f"NOT_A_GENE_{i}" for i in range(adata.n_vars)]
    adata.write_h5ad(d / "alien.h5ad")
    return d / "alien.h5ad"


def _copy(d: Path, sample: Path) -> Path:
    return Path(shutil.copy(sample, d / "copy.h5ad"))


def _bad_indices(d: Path, sample: Path) -> Path:
    path = _copy(d, sample)
    with h5py.File(path, "a") as h5:
        h5["X/indices"][500] = 10_000
    return path


def _bad_indptr(d: Path, sample: Path) -> Path:
    path = _copy(d, sample)
    with h5py.File(path, "a") as h5:
        h5["X/indptr"][300] = h5["X/indptr"][302] + 1
    return path


def _obs_mismatch(d: Path, sample: Path) -> Path:
    path = _copy(d, sample)
    with h5py.File(path, "a") as h5:
        index = h5["obs/index"][:-1]
        del h5["obs/index"]
        h5["obs"].create_dataset("index", data=index)
    return path


CASES: list[tuple[str, Callable[[Path, Path], Path], str | None]] = [
    ("E101", _missing, None),
    ("E101", _directory, None),
    ("E102", _csv, None),
    ("E102", _empty, None),
    ("E103", _truncated(0.5), None),
    ("E103", _truncated(0.97), None),
    ("E104", _no_x, None),
    ("E105", _odd_x, None),
    ("E106", _zero_cells, None),
    ("E107", _zero_genes, None),
    ("E108", _edit_values(lambda x: np.log1p(x)), None),
    ("E108", _edit_values(_set(2.5), dense=True), None),
    ("E109", _edit_values(_set(-1)), None),
    ("E110", _edit_values(_set(np.nan)), None),
    ("E110", _edit_values(_set(np.inf), dense=True), None),
    ("E111", _duplicate_genes, None),
    ("E112", _unknown_genes, None),
    ("E113", _copy, "counts"),
    ("E114", _bad_indices, None),
    ("E114", _bad_indptr, None),
    ("E115", _obs_mismatch, None),
]


@pytest.mark.parametrize("code,build,layer", CASES, ids=[f"{code}-{i}" for i, (code, _, _) in enumerate(CASES)])
def test_each_bad_input_has_its_code_and_is_left_untouched(
    code: str,
    build: Callable[[Path, Path], Path],
    layer: str | None,
    tmp_path: Path,
    sample_h5ad: Path,
    fixture_cache: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    path = build(data, sample_h5ad)
    monkeypatch.chdir(tmp_path)  # anything written relative to the cwd would show up in the tree
    monkeypatch.setattr(h5io, "BLOCK_ELEMENTS", 10_000)  # stream the 174k values in many blocks
    cache_before = _tree(Path(fixture_cache))
    before = _tree(tmp_path)
    with pytest.raises(InputValidationError) as raised:
        validate_input(str(path), MODEL, layer=layer, cache_dir=fixture_cache)
    assert raised.value.code == code, raised.value.render()
    assert raised.value.message and raised.value.hint
    assert _tree(tmp_path) == before  # input byte-identical, no output directory or file
    assert _tree(Path(fixture_cache)) == cache_before


def test_messages_name_what_to_fix(tmp_path: Path, sample_h5ad: Path, fixture_cache: str) -> None:
    adata = _load(sample_h5ad)
    adata.layers["raw"] = adata.X.copy()
    adata.layers["spliced"] = adata.X.copy()
    adata.write_h5ad(tmp_path / "layers.h5ad")
    with pytest.raises(InputValidationError) as raised:
        validate_input(str(tmp_path / "layers.h5ad"), MODEL, layer="counts", cache_dir=fixture_cache)
    assert "'counts'" in raised.value.message and "raw, spliced" in raised.value.message

    alien = _unknown_genes(tmp_path, sample_h5ad)
    with pytest.raises(InputValidationError) as raised:
        validate_input(str(alien), MODEL, cache_dir=fixture_cache)
    assert "0.0%" in raised.value.message and "NOT_A_GENE_0" in raised.value.message

    adata.X = np.log1p(adata.X)
    adata.write_h5ad(tmp_path / "logged.h5ad")
    with pytest.raises(InputValidationError) as raised:
        validate_input(str(tmp_path / "logged.h5ad"), MODEL, cache_dir=fixture_cache)
    assert raised.value.code == "E108" and "--layer raw" in raised.value.hint


def test_unknown_model_is_a_config_error_before_the_file_is_read(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        validate_input(str(tmp_path / "whatever.h5ad"), "no-such-model")
    assert raised.value.code == "E201"


@pytest.mark.parametrize("model", ["geneformer", "scgpt"])
def test_valid_sample_summary(sample_h5ad: Path, fixture_cache: str, model: str) -> None:
    adata = _load(sample_h5ad)
    before = hashlib.sha256(sample_h5ad.read_bytes()).hexdigest()
    summary = validate_input(str(sample_h5ad), model, cache_dir=fixture_cache)
    vocab = registry.gene_vocabulary(get_model(model), {}, fixture_cache)
    known = len(set(adata.var_names) & vocab.symbols)
    assert summary.sha256 == before == hashlib.sha256(sample_h5ad.read_bytes()).hexdigest()
    assert (summary.n_cells, summary.n_genes) == adata.shape
    assert summary.size_bytes == sample_h5ad.stat().st_size
    assert (summary.x_source, summary.x_format, summary.dtype) == ("X", "csr", str(adata.X.dtype))
    assert summary.gene_id_kind == "symbol"
    assert summary.genes_in_vocab == known and summary.vocab_overlap == pytest.approx(known / adata.n_vars)


def test_csc_dense_float_and_layer_inputs_are_accepted(tmp_path: Path, sample_h5ad: Path, fixture_cache: str) -> None:
    adata = _load(sample_h5ad)
    counts = adata.X
    variants = {  # name: (X, layer to validate, expected format, expected dtype)
        "csc": (sp.csc_matrix(counts), None, "csc", "int32"),
        "dense": (counts.toarray(), None, "dense", "int32"),
        "float": (sp.csr_matrix(counts, dtype=np.float32), None, "csr", "float32"),  # integral floats are counts
        "layer": (np.log1p(counts.toarray()).astype(np.float32), "counts", "csr", "int32"),
    }
    for name, (x, layer, fmt, dtype) in variants.items():
        out = ad.AnnData(X=x, obs=adata.obs, var=adata.var, layers={"counts": counts} if layer else None)
        out.write_h5ad(tmp_path / f"{name}.h5ad")
        summary = validate_input(str(tmp_path / f"{name}.h5ad"), MODEL, layer=layer, cache_dir=fixture_cache)
        assert (summary.n_cells, summary.n_genes) == adata.shape
        assert (summary.x_format, summary.dtype) == (fmt, dtype)
        assert summary.x_source == ("layers/counts" if layer else "X")


def test_low_overlap_warns_with_the_fraction(
    tmp_path: Path, sample_h5ad: Path, fixture_cache: str, caplog: pytest.LogCaptureFixture
) -> None:
    adata = _load(sample_h5ad)
    adata.var_names = [f"NOT_A_GENE_{i}" if i % 4 else name for i, name in enumerate(adata.var_names)]
    adata.write_h5ad(tmp_path / "low.h5ad")
    vocab = registry.gene_vocabulary(get_model(MODEL), {}, fixture_cache)
    known = len(set(adata.var_names) & vocab.symbols)
    with caplog.at_level(logging.WARNING, logger="helical_airflow.validate"):
        summary = validate_input(str(tmp_path / "low.h5ad"), MODEL, cache_dir=fixture_cache)
    assert 0 < summary.genes_in_vocab == known < adata.n_vars / 2
    assert f"{100 * known / adata.n_vars:.1f}%" in caplog.text


def test_ensembl_ids_are_detected_and_matched(tmp_path: Path, sample_h5ad: Path, fixture_cache: str) -> None:
    vocab = registry.gene_vocabulary(get_model(MODEL), {}, fixture_cache)
    ids = sorted(vocab.ensembl)[:100]
    adata = _load(sample_h5ad)[:, :120].copy()
    adata.var_names = [f"{gene}.7" for gene in ids] + [f"ENSG{99_000_000_000 + i:011d}" for i in range(20)]
    adata.write_h5ad(tmp_path / "ens.h5ad")
    summary = validate_input(str(tmp_path / "ens.h5ad"), MODEL, cache_dir=fixture_cache)
    assert summary.gene_id_kind == "ensembl"
    assert summary.genes_in_vocab == len([g for g in ids if g in vocab.ensembl])


def test_gene_id_kind_detection() -> None:
    assert detect_gene_id_kind(["ENSG00000141510", "ENSMUSG00000059552.3", "CD3E"]) == "ensembl"
    assert detect_gene_id_kind(["CD3E", "MS4A1", "ENSG00000141510"]) == "symbol"
    assert detect_gene_id_kind([]) == "symbol"


def test_every_code_has_a_message_and_a_fix() -> None:
    assert all(code.startswith("E1") and title and hint for code, (title, hint) in CODES.items())
