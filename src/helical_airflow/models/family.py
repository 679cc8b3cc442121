"""What a model family is to the platform: its models, its files in helical's cache, its vocabulary, its
run options, and (imported only when used) its adapter and fixture writer.

Each family lives in its own folder, `models/<family>/`:
- `__init__.py`: `FAMILY = ModelFamily(...)`, plain data (no helical, no torch: the scheduler imports it);
- `files.py`: the cache files helical's config downloads, and how to read the genes it knows from them;
- `adapter.py`: a `HelicalRunner` subclass over helical's `process_data` / `get_embeddings`;
- `fixture.py`: `build(ctx, spec)`, which writes a tiny random-weight model in exactly that layout;
- a fast path, where one exists (`geneformer/fast.py`, `scgpt/fast.py`).
`models/registry.py` lists the families, one line each. docs/DEVELOPERS.md says how to add one.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..spec import Engine
from .profiles import ModelOption, ModelSpec

if TYPE_CHECKING:
    from .fixture_io import FixtureContext
    from .vocab import GeneVocabulary

#: (helical model name, resolved options) -> files relative to `<prefix>/.cache/helical/models`, helical's order
FilesFn = Callable[[str, Mapping[str, str]], list[str]]
#: (spec, resolved options, models dir) -> the genes the model knows, read from the cache without torch
VocabularyFn = Callable[[ModelSpec, Mapping[str, str], Path], "GeneVocabulary"]


@dataclass(frozen=True)
class ModelFamily:
    name: str
    models: tuple[ModelSpec, ...]
    default_model: str  # the model the family's name stands for
    package: str  # the folder's package, where `adapter` and `fixture` are looked up
    files: FilesFn
    vocabulary: VocabularyFn
    options: tuple[ModelOption, ...] = ()
    engines: tuple[Engine, ...] = ("helical",)
    #: None when helical's code for this family runs on a CPU; otherwise why it cannot (a CUDA-only kernel,
    #: with the evidence): a CPU run then fails with E228 before anything loads
    cpu_unsupported: str | None = None
    #: None when the family runs in bf16 (torch autocast: on a CPU when asked for by name, on a GPU from the profile
    #: or the run); otherwise why it cannot (with the evidence): such a run fails with E408 before anything loads
    bf16_unsupported: str | None = None
    #: how close a cell's embedding is across shardings (CPU fp32): 1e-5 when per-cell by design; a family whose
    #: helical code samples or pads across cells documents its bound and the reason in `quirks`
    shard_atol: float = 1e-5
    #: how close a cell's embedding is across layouts of the same file (column order, symbols or Ensembl ids with or
    #: without versions, X's format; tests/integration/test_gene_invariance.py): the adapters hand helical the genes
    #: in one canonical order and id system (models.runner.canonical_input), so helical sees the same input
    layout_atol: float = 1e-5
    #: the Hugging Face hub repository helical's code loads the model from (from_pretrained), or None when its
    #: files come from helical's own store (`models download` fetches those)
    hub_repo: str | None = None
    adapter: str = "adapter:Runner"  # "<module>:<class>" in `package`; imports helical when resolved
    fixture: str | None = "fixture:build"  # "<module>:<function>" in `package`, or None: no offline fixture
    #: "<module>:<class>" in `package`: the family's `models.finetuning.FineTuneFamily` (helical's *FineTuningModel),
    #: or None: `finetune` stops with E807 (and `finetune_unsupported`, when set, says why)
    finetune: str | None = None
    finetune_unsupported: str | None = None
    quirks: tuple[str, ...] = field(default=())  # what the adapter does about helical's habits (docs/models.md)

    def option(self, name: str) -> ModelOption | None:
        return next((o for o in self.options if o.name == name), None)

    def runner_class(self) -> Any:
        return _resolve(self.package, self.adapter)

    def finetune_family(self) -> Any:
        return _resolve(self.package, self.finetune)() if self.finetune else None

    def fixture_builder(self) -> Callable[[FixtureContext, ModelSpec], dict[str, Any]] | None:
        return _resolve(self.package, self.fixture) if self.fixture else None


def _resolve(package: str, ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(f"{package}.{module}"), attr)
