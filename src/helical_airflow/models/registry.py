"""THE registry of model families: one line per family, and everything the CLI, the DAG, validation, planning
and the fixture builder ask about a model.

No module outside `models/` compares a family name as a string: they ask here. This module imports neither
helical nor torch (the Airflow scheduler reads it); `load_runner` imports the family's adapter, and with it
helical, only when a shard is embedded.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..spec import Engine, Precision
from . import cache, runner
from .c2s import FAMILY as C2S
from .caduceus import FAMILY as CADUCEUS
from .evo_2 import FAMILY as EVO_2
from .family import ModelFamily
from .geneformer import FAMILY as GENEFORMER
from .genept import FAMILY as GENEPT
from .helix_mrna import FAMILY as HELIX_MRNA
from .hyena_dna import FAMILY as HYENA_DNA
from .mamba2_mrna import FAMILY as MAMBA2_MRNA
from .nicheformer import FAMILY as NICHEFORMER
from .profiles import ModelSpec
from .scgpt import FAMILY as SCGPT
from .tahoe import FAMILY as TAHOE
from .transcriptformer import FAMILY as TRANSCRIPTFORMER
from .uce import FAMILY as UCE

if TYPE_CHECKING:
    from .runner import ModelRunner
    from .vocab import GeneVocabulary

#: every family, in the order `models list` shows them. Adding a family: its folder, then one entry here.
FAMILIES: dict[str, ModelFamily] = {
    family.name: family
    for family in (GENEFORMER, SCGPT, UCE, TRANSCRIPTFORMER, NICHEFORMER, TAHOE, GENEPT, C2S)
    + (HYENA_DNA, CADUCEUS, EVO_2, HELIX_MRNA, MAMBA2_MRNA)  # sequence families (seqio.py inputs)
}

#: family name -> the model it stands for
FAMILY_DEFAULTS: dict[str, str] = {name: family.default_model for name, family in FAMILIES.items()}


def _alias(family: str, target: ModelSpec) -> ModelSpec:
    return target.model_copy(update={"name": family, "description": f"alias of {target.name}: {target.description}"})


_BY_NAME: dict[str, ModelSpec] = {spec.name: spec for family in FAMILIES.values() for spec in family.models}

#: Every name users may pass to --model: each family's name (its default model), then every model.
MODELS: dict[str, ModelSpec] = {
    **{name: _alias(name, _BY_NAME[target]) for name, target in FAMILY_DEFAULTS.items() if name != target},
    **_BY_NAME,
}


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


def get_family(spec: ModelSpec) -> ModelFamily:
    return FAMILIES[spec.family]


def has_fixture(spec: ModelSpec) -> bool:
    """`models fixture` can build an offline random-weight stand-in for this model."""
    return get_family(spec).fixture is not None


def resolve_options(spec: ModelSpec, given: Mapping[str, str] | None) -> dict[str, str]:
    """The family's model options with the user's values (checked) and the defaults for the rest."""
    family = get_family(spec)
    given = dict(given or {})
    unknown = sorted(set(given) - {o.name for o in family.options})
    if unknown:
        known = ", ".join(o.name for o in family.options) or "none"
        raise ConfigError(
            "E227",
            f"model option(s) {', '.join(unknown)} do not apply to {spec.family} (its options: {known})",
            "drop them, or see docs/models.md for each family's options",
        )
    resolved: dict[str, str] = {}
    for option in family.options:
        value = str(given.get(option.name, option.default))
        if option.choices and value not in option.choices:
            raise ConfigError(
                "E227",
                f"{spec.family} option {option.name}={value!r} is not one of {', '.join(option.choices)}",
                f"pass --option {option.name}=VALUE with one of the values above",
            )
        resolved[option.name] = value
    return resolved


def required_files(spec: ModelSpec, options: Mapping[str, str]) -> list[str]:
    """Files helical downloads for this model, relative to `<cache>/.cache/helical/models`."""
    return get_family(spec).files(spec.helical_model_name, options)


def missing_files(spec: ModelSpec, options: Mapping[str, str], cache_dir: str | None) -> list[Path]:
    root = cache.models_dir(cache_dir)
    return [root / rel for rel in required_files(spec, options) if not (root / rel).is_file()]


def weights_files(spec: ModelSpec, options: Mapping[str, str], cache_dir: str | None) -> list[Path]:
    """The model's files present in the cache (weights, config, vocabulary), for the weights checksum."""
    root = cache.models_dir(cache_dir)
    return sorted(root / rel for rel in required_files(spec, options) if (root / rel).is_file())


def require_files(spec: ModelSpec, options: Mapping[str, str], cache_dir: str | None) -> None:
    """Raise E202 naming the missing files and how to get them."""
    missing = missing_files(spec, options, cache_dir)
    if missing:
        shown = ", ".join(str(p) for p in missing[:3]) + (" ..." if len(missing) > 3 else "")
        raise ConfigError(
            "E202",
            f"the weights cache lacks {len(missing)} file(s) of model {spec.name!r}: {shown}",
            cache.missing_hint(spec.name, has_fixture(spec)),
        )


def gene_vocabulary(spec: ModelSpec, options: Mapping[str, str], cache_dir: str | None) -> GeneVocabulary:
    """The genes the model knows, read from the cache without importing helical or torch."""
    require_files(spec, options, cache_dir)
    return get_family(spec).vocabulary(spec, options, cache.models_dir(cache_dir))


def check_precision(spec: ModelSpec, precision: Precision) -> None:
    """E408 for a bf16 run of a family whose helical code cannot return bf16 results (ModelFamily.bf16_unsupported)."""
    family = get_family(spec)
    if precision == "bf16" and family.bf16_unsupported:
        raise ConfigError(
            "E408",
            f"{spec.name!r} cannot run in bf16: {family.bf16_unsupported}",
            "run it in fp32 (--precision fp32; the DAG's `precision` Param), or fp16 on a GPU",
        )


def check_runnable(spec: ModelSpec, device: str, engine: Engine) -> None:
    """E221 for an engine the family lacks; E228 for a CPU run of a family whose helical code needs CUDA."""
    family = get_family(spec)
    if engine not in family.engines:
        raise ConfigError(
            "E221",
            f"engine {engine!r} is not available for {spec.name!r} (it has: {', '.join(family.engines)})",
            "use --engine helical",
        )
    if device == "cpu" and family.cpu_unsupported:
        raise ConfigError(
            "E228",
            f"{spec.name!r} cannot run on a CPU: {family.cpu_unsupported}",
            "run it on a CUDA GPU (--device cuda; the DAG routes it to the gpu queue)",
        )


def load_runner(
    spec: ModelSpec, *, device: str, precision: Precision, batch_size: int, engine: Engine, seed: int,
    options: Mapping[str, str],
) -> ModelRunner[Any]:  # fmt: skip
    """Load the model through helical (imported here, lazily) and return a runner for shards.

    The caller must have pointed CACHE_DIR_HELICAL_PREFIX at the cache before anything imported helical.
    """
    check_runnable(spec, device, engine)
    check_precision(spec, precision)
    cache_dir = runner.helical_prefix()
    require_files(spec, options, cache_dir)
    runner.trust_cached_files(required_files(spec, options), cache_dir)  # the first helical import
    runner.drop_helical_log_handler()
    runner.seed_everything(seed)
    try:
        runner_class = get_family(spec).runner_class()
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            "E222",
            f"model family {spec.family!r} has no adapter in this version of helical-airflow ({exc})",
            "pick another model (helical-airflow models list says which run where)",
        ) from exc
    vocabulary = get_family(spec).vocabulary(spec, options, cache.models_dir(cache_dir))
    settings = runner.RunSettings(
        device=device, precision=precision, batch_size=batch_size, engine=engine,
        seed=seed, options=dict(options), cache_dir=cache_dir,
    )  # fmt: skip
    loaded: ModelRunner[Any] = runner_class(spec, settings, vocabulary)
    return loaded
