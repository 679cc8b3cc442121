"""A worker's own weights cache is checked by checksum, not by file name (embed.shard_cache_dir, E533), and each
file is read once for it (models/cache.py file_sha256 keeps its digest in a sidecar keyed by the file's stat).

Two real fixture caches of the same model, built with different seeds: the same file names, other weights."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from helical_airflow.embed import shard_cache_dir
from helical_airflow.errors import ConfigError
from helical_airflow.models import cache, get_model, registry
from helical_airflow.models.fixture import build_fixture
from helical_airflow.plan import resolve_params, weights_checksum
from helical_airflow.spec import InputSummary, Plan, RunParams

MODEL = "geneformer"


@pytest.fixture(scope="module")
def caches(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The planner's cache (seed 0) and another worker's cache of the same model with other weights (seed 1)."""
    planner, other = tmp_path_factory.mktemp("planner"), tmp_path_factory.mktemp("other")
    build_fixture(planner, families=(), models=[MODEL], seed=0)
    build_fixture(other, families=(), models=[MODEL], seed=1)
    return planner, other


def _plan(tmp_path: Path, cache_dir: Path, per_file: bool = True) -> Plan:
    params = resolve_params(RunParams(model=MODEL, device="cpu", cache_dir=str(cache_dir)))
    files = registry.weights_files(get_model(MODEL), params.options, str(cache_dir))
    whole, each = weights_checksum(files, cache.models_dir(str(cache_dir)))
    summary = InputSummary(path=str(tmp_path / "x.h5ad"), sha256="0" * 64, size_bytes=1, n_cells=10, n_genes=5,
                           x_source="X", x_format="csr", dtype="int32", gene_id_kind="symbol", genes_in_vocab=5,
                           vocab_overlap=1.0)  # fmt: skip
    return Plan(run_key="abc123", dataset="x", out_dir=str(tmp_path / "out"), input=summary, params=params,
                model_family="geneformer", helical_model_name=MODEL, fixture=True, weights_checksum=whole,
                weights_files=each if per_file else {}, code_version="c", shards=[], created_at="now")  # fmt: skip


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_worker_cache_with_other_weights_under_the_same_names_is_refused(
    caches: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    planner, other = caches
    plan = _plan(tmp_path, planner)
    root, other_root = cache.models_dir(str(planner)), cache.models_dir(str(other))
    differ = sorted(rel for rel in plan.weights_files if _sha256(root / rel) != _sha256(other_root / rel))
    assert differ and len(differ) < len(plan.weights_files)  # the weights differ, the vocabulary files do not

    monkeypatch.setenv("HELICAL_AIRFLOW_WORKER_CACHE_DIR", str(other))
    with pytest.raises(ConfigError) as err:
        shard_cache_dir(plan)
    assert err.value.code == "E533" and f"in {len(differ)} file(s) (first: {differ[0]}," in err.value.message
    assert str(other) in err.value.hint and "models download" in err.value.hint

    same = tmp_path / "worker-copy"  # a faithful copy of the planner's cache: accepted
    shutil.copytree(planner, same)
    monkeypatch.setenv("HELICAL_AIRFLOW_WORKER_CACHE_DIR", str(same))
    assert shard_cache_dir(plan) == str(same)

    # an old plan (no per-file checksums) is compared by its one checksum over every file
    old = _plan(tmp_path, planner, per_file=False)
    assert shard_cache_dir(old) == str(same)
    monkeypatch.setenv("HELICAL_AIRFLOW_WORKER_CACHE_DIR", str(other))
    with pytest.raises(ConfigError) as err:
        shard_cache_dir(old)
    assert err.value.code == "E533" and "(first: (all files)," in err.value.message


def test_each_file_is_hashed_once_and_again_only_when_it_changed(caches: tuple[Path, Path], tmp_path: Path) -> None:
    planner, other = caches
    copy = tmp_path / "cache"
    shutil.copytree(planner, copy)
    root = cache.models_dir(str(copy))
    plan = _plan(tmp_path, planner)
    weights = next(rel for rel in sorted(plan.weights_files) if rel.endswith((".safetensors", ".bin", ".pt")))
    path, sidecar = root / weights, cache.sha256_sidecar(root, weights)

    assert cache.file_sha256(root, weights) == plan.weights_files[weights] == _sha256(path)
    assert sidecar.is_file() and not sidecar.is_relative_to(root)  # never inside helical's own folder

    # the sidecar is what is read while the file is unchanged: a digest planted there is returned as is
    saved = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**saved, "sha256": "f" * 64}))
    assert cache.file_sha256(root, weights) == "f" * 64

    # other weights written over it in place, same size, mtime put back (cp -p, rsync -t): read again
    replacement = (cache.models_dir(str(other)) / weights).read_bytes()
    assert len(replacement) == path.stat().st_size
    before = path.stat()
    path.write_bytes(replacement)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert cache.file_sha256(root, weights) == hashlib.sha256(replacement).hexdigest() != plan.weights_files[weights]
    assert json.loads(sidecar.read_text())["sha256"] == hashlib.sha256(replacement).hexdigest()
