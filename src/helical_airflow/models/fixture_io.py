"""What every family's fixture writer shares: the synthetic gene table, atomic idempotent writes, seeds.

A family's `fixture.py` defines `build(ctx: FixtureContext, spec: ModelSpec) -> dict` that writes, through
`ctx.write`, exactly the files helical's config for `spec` reads (random weights, seeded), and returns what
FIXTURE.json records about it (hidden size, layers, parameters, ...). `models/fixture.py` runs the writers.

Gene identifiers: real Ensembl ids for the sample's symbols cannot be had offline, so each gene gets
a synthetic id `ENSG9` + 10 digits. It matches helical's Ensembl pattern (so helical treats it as
one) and can never collide with a real id (those start `ENSG00`). helical's symbol <-> Ensembl
table (`hsapiens_pybiomart.csv`) is written with these pairs.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import io
import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .runner import is_ensembl

Shape = Literal["tiny", "real"]


@dataclass
class FixtureContext:
    out: Path  # the cache prefix (CACHE_DIR_HELICAL_PREFIX)
    root: Path  # <out>/.cache/helical/models
    table: list[tuple[str, str]]  # (ensembl_id, symbol) of every fixture gene; symbol "" for an id-only gene
    shape: Shape  # "tiny" (a few hundred KB a model) or "real" (the published architecture)
    seed: int
    written: list[str] = field(default_factory=list)  # paths rewritten by this build
    files: set[str] = field(default_factory=set)  # every file of the build, relative to `out`

    def write(self, rel: str, data: bytes) -> Path:
        """Write `<root>/<rel>` atomically, only when its bytes change, and record it as part of the build."""
        path = self.root / rel
        write_if_changed(path, data, self.written)
        self.files.add(str(path.relative_to(self.out)))
        return path

    @property
    def symbols(self) -> list[str]:
        return [s for _, s in self.table if s]

    @property
    def ensembl_ids(self) -> list[str]:
        return [e for e, _ in self.table]

    def stable_seed(self, name: str) -> int:
        return stable_seed(self.seed, name)


def default_genes() -> list[str]:
    """The sample's gene symbols (written by scripts/make_sample.py)."""
    text = importlib.resources.files("helical_airflow.models").joinpath("fixture_genes.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


def synthetic_ensembl_id(index: int) -> str:
    return f"ENSG9{index:010d}"


def gene_table(genes: Sequence[str], n_synthetic_genes: int) -> list[tuple[str, str]]:
    """(ensembl_id, symbol) for every fixture gene; an input that is already an Ensembl id keeps it."""
    names = list(dict.fromkeys(genes)) + [f"SYNTH{i:05d}" for i in range(1, n_synthetic_genes + 1)]
    return [(name, "") if is_ensembl(name) else (synthetic_ensembl_id(i), name) for i, name in enumerate(names, 1)]


def write_if_changed(path: Path, data: bytes, written: list[str]) -> None:
    """Write atomically, and only when the content changes (keeps re-runs from touching files)."""
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
        handle.write(data)
    Path(handle.name).replace(path)
    written.append(str(path))


def json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, indent=1).encode()


def torch_bytes(obj: Any) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def stable_seed(seed: int, name: str) -> int:
    return (seed * 1_000_003 + int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)) % 2**31


def save_pretrained_quietly(model: Any, directory: str) -> None:
    """`save_pretrained` without transformers' per-file "Writing model shards" progress bar (one per model)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(directory)
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def run_child(code: str, *args: Any) -> str:
    """Run `code` in a fresh Python and return its stdout.

    For fixture writers that need helical's own classes: importing helical fixes its cache prefix for the whole
    process (it reads CACHE_DIR_HELICAL_PREFIX once), and the process that builds a fixture often embeds with
    it next. The child gets the arguments as JSON in sys.argv[1].
    """
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(list(args))], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"building a fixture in a child process failed:\n{done.stderr[-3000:]}")
    return done.stdout
