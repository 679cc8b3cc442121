"""The model table, the cache layout helpers and vocabulary reading: no helical, no torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from helical_airflow.errors import ConfigError
from helical_airflow.models import FAMILIES, FAMILY_DEFAULTS, MODELS, get_model, is_fixture_cache, registry
from helical_airflow.models import cache as model_cache
from helical_airflow.models import runner as runner_module
from helical_airflow.models.geneformer import files as geneformer_files
from helical_airflow.models.runner import (
    HelicalRunner,
    RunSettings,
    cells_with_known_genes,
    known_gene_mask,
    require_mapping,
)


def test_unknown_model_is_e201_and_lists_every_name() -> None:
    with pytest.raises(ConfigError) as err:
        get_model("geneformer-xl")
    assert err.value.code == "E201"
    for name in MODELS:
        assert name in err.value.message
    assert err.value.hint


def test_family_names_resolve_to_their_default_model() -> None:
    for family, target in FAMILY_DEFAULTS.items():
        alias, real = get_model(family), get_model(target)
        assert alias.family == family
        assert alias.helical_model_name == real.helical_model_name
        assert alias.profile == real.profile


def test_names_are_safe_as_file_names_and_obsm_keys() -> None:
    for name in MODELS:
        assert "/" not in name and " " not in name


def test_profiles_are_consistent() -> None:
    for spec in MODELS.values():
        profile = spec.profile
        assert profile.modality in ("rna", "dna_sequence", "rna_sequence")
        assert (spec.max_length is not None) == spec.is_sequence  # a sequence model knows its context
        assert profile.batch_size >= 1 and profile.memory_cap_gb > 0
        # a GPU-only model must be scheduled on the GPU queue and pool, and only those
        assert (profile.gpu == "required") == (profile.queue == "gpu") == (profile.pool == "gpu_pool")
        assert spec.family in FAMILIES


def test_every_geneformer_model_helical_accepts_is_a_name() -> None:
    geneformers = {s.helical_model_name for s in MODELS.values() if s.family == "geneformer"}
    assert geneformers == set(geneformer_files.VERSION)


def test_missing_cache_is_e202_with_fixture_hint(tmp_path: Path) -> None:
    for name in ("geneformer", "scgpt"):
        with pytest.raises(ConfigError) as err:
            registry.gene_vocabulary(get_model(name), {}, str(tmp_path))
        assert err.value.code == "E202"
        assert "models fixture" in err.value.hint and "models download" in err.value.hint
    assert registry.weights_files(get_model("scgpt"), {}, str(tmp_path)) == []


def test_missing_hint_names_the_download_command_and_the_fixture_only_when_there_is_one() -> None:
    with_fixture, without = model_cache.missing_hint("m1", True), model_cache.missing_hint("m1", False)
    assert "models download m1" in with_fixture and "models fixture" in with_fixture
    assert "models download m1" in without and "no offline fixture" in without


def test_fixture_marker_detection(tmp_path: Path) -> None:
    assert not is_fixture_cache(str(tmp_path))
    (tmp_path / model_cache.FIXTURE_MARKER).write_text(json.dumps({"fixture": True}))
    assert is_fixture_cache(str(tmp_path))
    assert model_cache.fixture_info(str(tmp_path)) == {"fixture": True}


def _write_scgpt_vocab(tmp_path: Path, genes: list[str], mapping: list[tuple[str, str]]) -> None:
    root = model_cache.models_dir(str(tmp_path))
    (root / "scgpt" / "scGPT_CP").mkdir(parents=True)
    vocab = {g: i for i, g in enumerate(["<pad>", "<cls>", *genes])}
    (root / "scgpt" / "scGPT_CP" / "vocab.json").write_text(json.dumps(vocab))
    (root / "scgpt" / "scGPT_CP" / "best_model.pt").write_bytes(b"not read by gene_vocabulary")
    rows = "\n".join(f"{i},{e},{s}" for i, (e, s) in enumerate(mapping))
    (root / model_cache.ENSEMBL_MAPPING_FILE).write_text(",ensembl_id,gene_name\n" + rows + "\n")


def test_scgpt_vocabulary_maps_ensembl_like_helical(tmp_path: Path) -> None:
    # helical maps an Ensembl id to the first gene_name row that has it
    mapping = [("ENSG00000000001", "CD3E"), ("ENSG00000000002", "NOTINVOCAB"), ("ENSG00000000001", "OTHER")]
    _write_scgpt_vocab(tmp_path, ["CD3E", "MS4A1"], mapping)
    vocab = registry.gene_vocabulary(get_model("scgpt"), {}, str(tmp_path))
    assert vocab.symbols == {"CD3E", "MS4A1"}
    assert vocab.ensembl == {"ENSG00000000001"}
    assert vocab.known(["ENSG00000000001.5", "ENSG00000000002"], "ensembl") == 1


def test_gene_vocabulary_does_not_import_helical_or_torch(tmp_path: Path) -> None:
    _write_scgpt_vocab(tmp_path, ["CD3E"], [("ENSG00000000001", "CD3E")])
    code = (
        "import sys; from helical_airflow.models import get_model, registry; "
        f"v = registry.gene_vocabulary(get_model('scgpt'), {{}}, {str(tmp_path)!r}); "
        "assert 'CD3E' in v.symbols; "
        "print(sorted(m for m in ('torch', 'helical') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_known_gene_mask_reads_each_identifier_in_its_own_system() -> None:
    names = ["CD3E", "ENSG00000000001.3", "ENSG00000000009", "ENSA"]  # ENSA is a real symbol
    mask = known_gene_mask(names, frozenset({"CD3E", "ENSA"}), frozenset({"ENSG00000000001"}))
    assert mask.tolist() == [True, True, False, True]


def test_cells_without_known_genes_are_found() -> None:
    import anndata as ad

    x = sp.csr_matrix(np.array([[1, 0, 0], [0, 0, 5], [0, 2, 0]]))
    adata = ad.AnnData(X=x)
    keep = cells_with_known_genes(adata, np.array([True, True, False]))
    assert keep.tolist() == [True, False, True]


def test_mapping_table_required_only_when_input_needs_it(tmp_path: Path) -> None:
    require_mapping(str(tmp_path), False, get_model("geneformer"))
    with pytest.raises(ConfigError) as err:
        require_mapping(str(tmp_path), True, get_model("geneformer"))
    assert err.value.code == "E202" and model_cache.ENSEMBL_MAPPING_FILE in err.value.message


def test_unknown_or_bad_model_option_is_e227() -> None:
    spec = get_model("geneformer")
    assert registry.resolve_options(spec, {}) == {}
    with pytest.raises(ConfigError) as err:
        registry.resolve_options(spec, {"species": "mouse"})
    assert err.value.code == "E227" and "species" in err.value.message
    with_choices = next(f for f in FAMILIES.values() if any(o.choices for o in f.options))
    option = next(o for o in with_choices.options if o.choices)
    spec = get_model(with_choices.name)
    assert registry.resolve_options(spec, {})[option.name] == option.default
    with pytest.raises(ConfigError) as err:
        registry.resolve_options(spec, {option.name: "no-such-value"})
    assert err.value.code == "E227" and option.choices[0] in err.value.message


class _ZerosRunner(HelicalRunner):
    """An adapter whose forward pass gives zeros: what HelicalRunner does around helical, without helical."""

    def load_model(self) -> Any:
        return {"loaded_with_vocab": len(self.vocab.symbols | self.vocab.ensembl), "cache_dir": self.cache_dir}

    @property
    def embedding_dim(self) -> int:
        return 3

    def _embed_helical(self, data: Any) -> np.ndarray:
        self.forwarded = list(data.obs_names)
        return np.zeros((data.n_obs, 3))


def _runner_on(tmp_path: Path, model: str, monkeypatch: pytest.MonkeyPatch) -> _ZerosRunner:
    monkeypatch.setattr(runner_module, "helical_prefix", lambda: str(tmp_path))  # helical may be imported already
    spec = get_model(model)
    settings = RunSettings(device="cpu", precision="fp32", batch_size=8, engine="fast", seed=1, options={},
                           cache_dir=str(tmp_path))  # fmt: skip
    vocabulary = registry.get_family(spec).vocabulary(spec, {}, model_cache.models_dir(str(tmp_path)))
    return _ZerosRunner(spec, settings, vocabulary)


def _adata(genes: list[str], counts: list[list[int]]) -> Any:
    import anndata as ad

    return ad.AnnData(X=sp.csr_matrix(np.array(counts, dtype=np.float32)),
                      obs={"obs_names": [f"c{i}" for i in range(len(counts))]}, var={"var_names": genes})


def test_runner_base_keeps_settings_and_loads_the_model_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_scgpt_vocab(tmp_path, ["CD3E", "MS4A1"], [])
    runner = _runner_on(tmp_path, "scgpt", monkeypatch)
    assert (runner.device, runner.precision, runner.batch_size, runner.seed, runner.engine) == ("cpu", "fp32", 8, 1,
                                                                                               "fast")
    assert runner.model == {"loaded_with_vocab": 2, "cache_dir": str(tmp_path)}
    assert runner.embedding_dim == 3


def test_symbol_vocabulary_needs_the_mapping_only_for_ensembl_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_scgpt_vocab(tmp_path, ["CD3E", "MS4A1"], [])
    (model_cache.models_dir(str(tmp_path)) / model_cache.ENSEMBL_MAPPING_FILE).unlink()
    runner = _runner_on(tmp_path, "scgpt", monkeypatch)
    out = runner.embed(_adata(["CD3E", "OTHER"], [[1, 0], [0, 4]]))
    assert runner.forwarded == ["c0"]  # c1 has counts only on a gene scGPT does not know
    assert out.shape == (2, 3) and (out[0] == 0).all() and np.isnan(out[1]).all()
    with pytest.raises(ConfigError) as err:
        runner.embed(_adata(["CD3E", "ENSG00000000001"], [[1, 0]]))
    assert err.value.code == "E202"


def test_ensembl_vocabulary_needs_the_mapping_only_for_symbol_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = get_model("geneformer")
    token_file = model_cache.models_dir(str(tmp_path)) / geneformer_files.paths(spec.helical_model_name)["token"]
    token_file.parent.mkdir(parents=True)
    token_file.write_text(json.dumps({"<pad>": 0, "ENSG00000000001": 1}))
    runner = _runner_on(tmp_path, "geneformer", monkeypatch)
    out = runner.embed(_adata(["ENSG00000000001.2", "ENSG00000000002"], [[0, 1], [3, 0]]))
    assert runner.forwarded == ["c1"] and np.isnan(out[0]).all()
    with pytest.raises(ConfigError) as err:
        runner.embed(_adata(["ENSG00000000001", "CD3E"], [[1, 0]]))
    assert err.value.code == "E202"
