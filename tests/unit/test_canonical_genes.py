"""The canonical gene order and id system every single-cell adapter hands helical (issue 22), without helical."""

from __future__ import annotations

import hashlib

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from helical_airflow.models.runner import OTHER_GENES, canonical_input, clean_input
from helical_airflow.models.vocab import GeneVocabulary

ENS = {"CD3E": "ENSG00000000001", "ENSA": "ENSG00000000002", "MS4A1": "ENSG00000000003"}


def vocabulary(native: str) -> GeneVocabulary:
    if native == "ensembl":
        return GeneVocabulary(symbols=frozenset(ENS), ensembl=frozenset(ENS.values()), native="ensembl",
                              mapping_file=None, aliases=dict(ENS))  # fmt: skip
    return GeneVocabulary(symbols=frozenset(ENS), ensembl=frozenset(ENS.values()), native="symbol",
                          mapping_file=None, aliases={e: s for s, e in ENS.items()})  # fmt: skip


@pytest.mark.parametrize("native", ["ensembl", "symbol"])
def test_each_id_is_read_in_its_own_system_version_stripped(native: str) -> None:
    vocab = vocabulary(native)
    own = (lambda s: ENS[s]) if native == "ensembl" else (lambda s: s)
    names = ["CD3E", "ENSG00000000001.7", "ENSG00000000003", "ENSA", "NOPE", "ENSG00000000009.1"]
    assert vocab.canonical_ids(names) == [own("CD3E"), own("CD3E"), own("MS4A1"), own("ENSA"), None, None]
    # a symbol with a dot is not an Ensembl id: its "version" is part of the name
    assert vocab.canonical_id("AC000068.10") is None


def counts(names: list[str], x: np.ndarray, fmt: str = "csr") -> ad.AnnData:
    data = ad.AnnData(X=sp.csr_matrix(x) if fmt == "csr" else x)
    data.var_names = names
    data.obs_names = [f"c{i}" for i in range(x.shape[0])]
    return clean_input(data)


@pytest.mark.parametrize("native", ["ensembl", "symbol"])
@pytest.mark.parametrize("library_size", [False, True])
def test_every_layout_of_the_same_genes_gives_the_same_canonical_input(native: str, library_size: bool) -> None:
    vocab = vocabulary(native)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, size=(6, 4)).astype(np.float32)
    names = ["CD3E", "ENSA", "MS4A1", "NOT_A_GENE"]
    reference, genes = canonical_input(counts(names, x), vocab, library_size)
    for seed in range(5):
        order = np.random.default_rng(seed).permutation(4)
        renamed = [f"{ENS[n]}.{seed + 1}" if n in ENS and (seed + i) % 2 else n for i, n in enumerate(names)]
        other, other_genes = canonical_input(counts([renamed[i] for i in order], x[:, order], "dense"), vocab,
                                             library_size)  # fmt: skip
        assert list(other.var_names) == list(reference.var_names)
        np.testing.assert_array_equal(np.asarray(other.X), reference.X.toarray())
        assert other_genes == genes and other_genes.sha256 == genes.sha256
    expected = sorted(ENS.values()) if native == "ensembl" else sorted(ENS)
    assert list(genes.ids) == expected and genes.count == 3
    assert genes.sha256 == hashlib.sha256("".join(f"{g}\n" for g in expected).encode()).hexdigest()
    # the unknown gene is left out, or kept as the library size's share (one column) where helical needs it
    assert (OTHER_GENES in reference.var_names) is library_size
    np.testing.assert_array_equal(np.asarray(reference.X.sum(axis=1)).ravel(),
                                  x.sum(axis=1) if library_size else x[:, :3].sum(axis=1))  # fmt: skip


def test_columns_naming_the_same_gene_are_summed() -> None:
    x = np.array([[1, 2, 4], [0, 3, 0]], dtype=np.int32)
    data, genes = canonical_input(counts(["CD3E", "ENSG00000000001.2", "ENSG00000000001.5"], x),
                                  vocabulary("ensembl"), False)  # fmt: skip
    assert list(data.var_names) == ["ENSG00000000001"] and genes.count == 1
    assert data.X.toarray().tolist() == [[7], [3]] and data.X.dtype == np.int32
