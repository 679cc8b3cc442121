"""THE table of models users may name, with the resource profile that schedules each one.

Naming scheme: a family name (`geneformer`, `scgpt`, `uce`, `transcriptformer`) picks that family's
default model; every other name is helical's own model name, verbatim (`gf-6L-10M-i2048`,
`4layer_model`, `tf_sapiens`, ...). No name contains a slash, so it is safe in file names and as an
`obsm` key. This module imports neither helical nor torch: the Airflow scheduler reads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict

from ..errors import ConfigError
from ..spec import Engine, Precision, QualityThresholds
from . import cache

if TYPE_CHECKING:
    from .runner import ModelRunner
    from .vocab import GeneVocabulary

Family = Literal["geneformer", "scgpt", "uce", "transcriptformer"]


class ResourceProfile(BaseModel):
    """What a model needs to run; drives the queue, pool, precision and batch size of its shards."""

    model_config = ConfigDict(frozen=True)

    modality: Literal["rna"] = "rna"
    gpu: Literal["optional", "required"]
    precision: Precision  # default on GPU; CPU always runs fp32
    batch_size: int  # cells per forward pass
    memory_cap_gb: float  # host memory a shard process may use (container / pod limit)
    queue: Literal["default", "gpu"]
    pool: str  # Airflow pool the shard tasks draw from
    engine: Engine = "helical"  # "fast" where a fast path exists (docs/fast_path.md): same embeddings, faster
    has_fixture: bool  # `models fixture` can build an offline random-weight stand-in
    quality: QualityThresholds | None = None  # label-score floors of the quality gate (quality.py); None: record only


class ModelSpec(BaseModel):
    """One entry of MODELS: the user-facing name, the helical model behind it and its profile."""

    model_config = ConfigDict(frozen=True)

    name: str
    family: Family
    helical_model_name: str
    embedding_dim: int  # of the real model (fixtures are smaller; ask the runner)
    profile: ResourceProfile
    description: str

    def required_files(self) -> list[str]:
        """Files helical downloads for this model, relative to `<cache>/.cache/helical/models`."""
        return cache.required_files(self.family, self.helical_model_name)

    def missing_files(self, cache_dir: str | None) -> list[Path]:
        root = cache.models_dir(cache_dir)
        return [root / rel for rel in self.required_files() if not (root / rel).is_file()]

    def weights_files(self, cache_dir: str | None) -> list[Path]:
        """The model's files present in the cache (weights, config, vocabulary), for the weights checksum."""
        root = cache.models_dir(cache_dir)
        return sorted(root / rel for rel in self.required_files() if (root / rel).is_file())

    def require_files(self, cache_dir: str | None) -> None:
        """Raise E202 naming the missing files and how to get them."""
        missing = self.missing_files(cache_dir)
        if missing:
            shown = ", ".join(str(p) for p in missing[:3]) + (" ..." if len(missing) > 3 else "")
            raise ConfigError(
                "E202",
                f"the weights cache lacks {len(missing)} file(s) of model {self.name!r}: {shown}",
                cache.missing_hint(self.profile.has_fixture),
            )

    def gene_vocabulary(self, cache_dir: str | None) -> GeneVocabulary:
        """The genes the model knows, read from the cache without importing helical or torch."""
        from .vocab import read_vocabulary

        self.require_files(cache_dir)
        return read_vocabulary(self, cache_dir)

    def load_runner(
        self,
        device: str = "cpu",
        precision: Precision | None = None,
        batch_size: int | None = None,
        engine: Engine | None = None,
        seed: int = 0,
    ) -> ModelRunner:
        """Load the model through helical (imported here, lazily) and return a runner for shards.

        The caller must have set CACHE_DIR_HELICAL_PREFIX before anything imported helical.
        """
        from .runner import load_runner

        return load_runner(
            self,
            device=device,
            precision=precision or (self.profile.precision if device != "cpu" else "fp32"),
            batch_size=batch_size or self.profile.batch_size,
            engine=engine or self.profile.engine,
            seed=seed,
        )


def _gpu_profile(precision: Precision, batch_size: int, memory_cap_gb: float, has_fixture: bool) -> ResourceProfile:
    return ResourceProfile(
        gpu="required", precision=precision, batch_size=batch_size, memory_cap_gb=memory_cap_gb,
        queue="gpu", pool="gpu_pool", has_fixture=has_fixture,
    )


def _any_profile(precision: Precision, batch_size: int, memory_cap_gb: float, has_fixture: bool) -> ResourceProfile:
    return ResourceProfile(
        gpu="optional", precision=precision, batch_size=batch_size, memory_cap_gb=memory_cap_gb,
        queue="default", pool="default_pool", has_fixture=has_fixture,
    )


def _fast(profile: ResourceProfile) -> ResourceProfile:
    """The fast engine by default: helical's tokens, weights and pooling, a faster forward pass
    (per-cell cosine >= 0.9999 against helical's get_embeddings, tests/integration/test_fast_equivalence.py)."""
    return profile.model_copy(update={"engine": "fast"})


def _gf(name: str, dim: int, profile: ResourceProfile, what: str) -> ModelSpec:
    return ModelSpec(
        name=name, family="geneformer", helical_model_name=name, embedding_dim=dim, profile=_fast(profile),
        description=f"Geneformer {what}",
    )


# fp16 on GPU is what helical's own get_embeddings autocasts to; memory caps are host RAM for one shard
# process with the default batch size (model + tokenised shard), rounded up generously.
_GENEFORMER_SPECS = [
    _gf("gf-6L-10M-i2048", 256, _any_profile("fp16", 24, 4, True), "v1, 6 layers, 2048 genes/cell"),
    _gf("gf-12L-40M-i2048", 512, _any_profile("fp16", 24, 6, True), "v1, 12 layers, 2048 genes/cell"),
    _gf("gf-12L-40M-i2048-CZI-CellxGene", 512, _any_profile("fp16", 24, 6, True),
        "v1, 12 layers, trained on CZI CELLxGENE"),
    _gf("gf-12L-38M-i4096", 512, _any_profile("fp16", 16, 8, True), "v2, 12 layers, 4096 genes/cell (default)"),
    _gf("gf-12L-38M-i4096-CLcancer", 512, _any_profile("fp16", 16, 8, True), "v2, cancer continual learning"),
    _gf("gf-20L-151M-i4096", 896, _gpu_profile("fp16", 8, 16, True), "v2, 20 layers"),
    _gf("gf-12L-104M-i4096", 768, _gpu_profile("fp16", 8, 12, True), "v3, 12 layers"),
    _gf("gf-12L-104M-i4096-CLcancer", 768, _gpu_profile("fp16", 8, 12, True), "v3, cancer continual learning"),
    _gf("gf-18L-316M-i4096", 1152, _gpu_profile("fp16", 4, 24, True), "v3, 18 layers"),
]

_OTHER_SPECS = [
    ModelSpec(
        name="scgpt", family="scgpt", helical_model_name="best_model", embedding_dim=512,
        profile=_fast(_any_profile("fp16", 24, 6, True)),
        description="scGPT whole-human continual pre-training checkpoint (scGPT_CP); CLS-token cell embedding",
    ),
    ModelSpec(
        name="4layer_model", family="uce", helical_model_name="4layer_model", embedding_dim=1280,
        profile=_any_profile("fp16", 24, 12, False),
        description="UCE, 4 layers, ESM2 protein embeddings (no offline fixture: see docs/models.md)",
    ),
    ModelSpec(
        name="33l_8ep_1024t_1280", family="uce", helical_model_name="33l_8ep_1024t_1280", embedding_dim=1280,
        profile=_gpu_profile("fp16", 8, 24, False),
        description="UCE, 33 layers, ESM2 protein embeddings (no offline fixture)",
    ),
    ModelSpec(
        name="tf_sapiens", family="transcriptformer", helical_model_name="tf_sapiens", embedding_dim=2048,
        profile=_gpu_profile("bf16", 8, 24, False),
        description="TranscriptFormer trained on human cells (no offline fixture)",
    ),
    ModelSpec(
        name="tf_exemplar", family="transcriptformer", helical_model_name="tf_exemplar", embedding_dim=2048,
        profile=_gpu_profile("bf16", 8, 24, False),
        description="TranscriptFormer trained on 5 model organisms (no offline fixture)",
    ),
    ModelSpec(
        name="tf_metazoa", family="transcriptformer", helical_model_name="tf_metazoa", embedding_dim=2048,
        profile=_gpu_profile("bf16", 8, 32, False),
        description="TranscriptFormer trained on 12 species (no offline fixture)",
    ),
]

#: family name -> the model it stands for
FAMILY_DEFAULTS: dict[str, str] = {
    "geneformer": "gf-12L-38M-i4096",
    "scgpt": "scgpt",
    "uce": "4layer_model",
    "transcriptformer": "tf_sapiens",
}


def _alias(family: str, target: ModelSpec) -> ModelSpec:
    return target.model_copy(update={"name": family, "description": f"alias of {target.name}: {target.description}"})


_BY_NAME = {spec.name: spec for spec in _GENEFORMER_SPECS + _OTHER_SPECS}

#: Every name users may pass to --model.
MODELS: dict[str, ModelSpec] = {
    **{family: _alias(family, _BY_NAME[target]) for family, target in FAMILY_DEFAULTS.items() if family != target},
    **_BY_NAME,
}

#: Geneformer models helical accepts, for the fixture builder.
GENEFORMER_MODEL_NAMES: tuple[str, ...] = tuple(spec.name for spec in _GENEFORMER_SPECS)


def get_model(name: str) -> ModelSpec:
    """The spec for a user-facing model name; E201 with the list of names if unknown."""
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(
            "E201",
            f"unknown model {name!r}; known: {', '.join(MODELS)}",
            "pick one of the names above (helical-airflow models list shows their profiles)",
        ) from None
