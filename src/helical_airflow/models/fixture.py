"""Offline fixture cache: tiny random-weight models and a synthetic gene vocabulary in helical's layout.

`build_fixture(out)` writes under `out/.cache/helical/models/` exactly the files helical's configs
download, so `CACHE_DIR_HELICAL_PREFIX=out` makes helical's own loading, `process_data` and
`get_embeddings` run for real, with no network. The weights are random (seeded): embeddings from a
fixture carry no biology, and `out/FIXTURE.json` says so; every run from such a cache is flagged.
Each family's `fixture.py` writes its own files (models/fixture_io.py has what they share).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from . import cache
from .fixture_io import FixtureContext, Shape, default_genes, gene_table, synthetic_ensembl_id, write_if_changed
from .profiles import ModelSpec
from .registry import FAMILIES, FAMILY_DEFAULTS, MODELS

log = logging.getLogger(__name__)

__all__ = ["FIXTURE_FAMILIES", "build_fixture", "default_genes", "gene_table", "synthetic_ensembl_id"]

#: families that have an offline fixture writer
FIXTURE_FAMILIES: tuple[str, ...] = tuple(name for name, family in FAMILIES.items() if family.fixture)
FIXTURE_VERSION = 2  # bump when the files written for the same arguments change


def build_fixture(
    out: Path,
    families: Iterable[str] = FIXTURE_FAMILIES,
    genes: list[str] | None = None,
    n_synthetic_genes: int = 0,
    shape: Shape = "tiny",
    seed: int = 0,
    models: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Write the fixture cache under `out` and return what FIXTURE.json records.

    models: which models to write (names from the model table; they add to `families`); default: every model
    of each family for shape="tiny" (a few hundred KB each) and only each family's default for shape="real".
    Idempotent: a file whose bytes would not change is not rewritten.
    """
    out = Path(out).resolve()
    families = tuple(dict.fromkeys(families))
    unknown = [f for f in families if f not in FIXTURE_FAMILIES]
    if unknown:
        raise ConfigError(
            "E224",
            f"no fixture for model family {', '.join(unknown)}: {', '.join(FIXTURE_FAMILIES)} have one",
            "see docs/models.md for the families that need their real weights",
        )
    if shape not in ("tiny", "real"):
        raise ConfigError("E225", f"unknown fixture shape {shape!r}", "use tiny or real")
    specs = _specs(families, models, shape)
    _refuse_real_cache(out)

    table = gene_table(genes if genes is not None else default_genes(), n_synthetic_genes)
    key = _build_key(specs, table, shape, seed)
    previous = cache.fixture_info(str(out)) or {}
    if _unchanged(out, previous.get("builds", {}).get(key)):
        return {**previous, "written": []}  # same arguments, files intact: nothing to do
    ctx = FixtureContext(out=out, root=cache.models_dir(str(out)), table=table, shape=shape, seed=seed)
    if not previous:  # claim the folder first, so a build cut short is still known to be a fixture
        write_if_changed(
            out / cache.FIXTURE_MARKER, json.dumps({"fixture": True, "weights": "random", "complete": False}).encode(),
            [],
        )  # fmt: skip
    ctx.write(cache.ENSEMBL_MAPPING_FILE, _mapping_csv(table))
    built: dict[str, dict[str, Any]] = {}
    for spec in specs:
        builder = FAMILIES[spec.family].fixture_builder()
        assert builder is not None  # _specs keeps fixture families only
        info = builder(ctx, spec)
        built[spec.name] = {"family": spec.family, "shape": shape, **info}
        log.info("fixture: %s written", spec.name)

    marker = _merge_marker(previous, built, table, n_synthetic_genes, seed)
    marker["builds"][key] = {rel: _sha256(out / rel) for rel in sorted(ctx.files)}
    write_if_changed(out / cache.FIXTURE_MARKER, (json.dumps(marker, indent=2, sort_keys=True) + "\n").encode(),
                     ctx.written)  # fmt: skip
    log.info("fixture cache %s: %d file(s) written, %d model(s)", out, len(ctx.written), len(built))
    marker["written"] = ctx.written
    return marker


def _specs(families: tuple[str, ...], models: Sequence[str] | None, shape: Shape) -> list[ModelSpec]:
    """The models to build: those named in `models`, and every model (tiny) or the default (real) of each family
    in `families` that has none of its models named."""
    named: list[ModelSpec] = []
    for name in models or ():
        if name not in MODELS:
            raise ConfigError("E201", f"unknown model {name!r}", "pick one from helical-airflow models list")
        if MODELS[name].family not in FIXTURE_FAMILIES:
            raise ConfigError("E224", f"no fixture for model {name!r} ({MODELS[name].family})", "see docs/models.md")
        named.append(MODELS[name])
    chosen = {(s.family, s.helical_model_name): s for s in named}
    for name in families:
        if any(s.family == name for s in named):
            continue
        for spec in FAMILIES[name].models if shape == "tiny" else [MODELS[FAMILY_DEFAULTS[name]]]:
            chosen.setdefault((spec.family, spec.helical_model_name), spec)
    # an alias (`geneformer`) builds under its model's own name
    by_model = {(s.family, s.helical_model_name): s for f in FAMILIES.values() for s in f.models}
    return [by_model[key] for key in chosen]


def _refuse_real_cache(out: Path) -> None:
    root = cache.models_dir(str(out))
    if root.is_dir() and any(root.iterdir()) and not cache.is_fixture_cache(str(out)):
        raise ConfigError(
            "E226",
            f"{out} already holds a helical cache that is not a fixture; random weights would overwrite real ones",
            "pass an empty or fixture folder to --out",
        )


def _mapping_csv(table: list[tuple[str, str]]) -> bytes:
    """helical reads it with pandas.read_csv(index_col=0): an unnamed index, then ensembl_id, gene_name."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["", "ensembl_id", "gene_name"])
    for i, (ensembl_id, symbol) in enumerate(table):
        writer.writerow([i, ensembl_id, symbol])
    return buffer.getvalue().encode()


def _build_key(specs: list[ModelSpec], table: list[tuple[str, str]], shape: str, seed: int) -> str:
    args = {
        "models": sorted(f"{s.family}/{s.helical_model_name}" for s in specs), "genes": _genes_hash(table),
        "shape": shape, "seed": seed, "version": FIXTURE_VERSION,
    }  # fmt: skip
    return hashlib.sha256(json.dumps(args, sort_keys=True).encode()).hexdigest()[:16]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _unchanged(out: Path, recorded: dict[str, str] | None) -> bool:
    return bool(recorded) and all(
        (out / rel).is_file() and _sha256(out / rel) == digest for rel, digest in (recorded or {}).items()
    )


def _genes_hash(table: list[tuple[str, str]]) -> str:
    return hashlib.sha256("\n".join(f"{e}\t{s}" for e, s in table).encode()).hexdigest()[:16]


def _merge_marker(
    previous: dict[str, Any],
    models: dict[str, dict[str, Any]],
    table: list[tuple[str, str]],
    n_synthetic: int,
    seed: int,
) -> dict[str, Any]:
    """FIXTURE.json: what was built; a later build into the same folder adds its models."""
    genes_hash = _genes_hash(table)
    if previous and previous.get("genes_sha256") != genes_hash:
        previous = {}  # a different vocabulary replaced every vocabulary file: older entries are stale
    return {
        "fixture": True,
        "fixture_version": FIXTURE_VERSION,
        "note": "random weights and a synthetic gene vocabulary written by `helical-airflow models fixture`; "
        "embeddings from this cache carry no biology",
        "weights": "random",
        "seed": seed,
        "n_genes": len(table),
        "n_synthetic_genes": n_synthetic,
        "genes_sha256": genes_hash,
        "ensembl_ids": "synthetic (ENSG9 + 10 digits; real ids start ENSG00)",
        "models": {**previous.get("models", {}), **models},
        "builds": dict(previous.get("builds", {})),  # argument hash -> sha256 of each file it wrote
    }
