"""The models: one registry of families (one folder each), adapters over real helical, offline fixtures.

Importing this package imports neither helical nor torch (the Airflow scheduler imports it);
`registry.load_runner` imports helical when a shard is embedded.
"""

from .cache import fixture_info, is_fixture_cache
from .family import ModelFamily
from .profiles import ModelOption, ModelSpec, ResourceProfile
from .registry import FAMILIES, FAMILY_DEFAULTS, MODELS, get_family, get_model
from .runner import ModelRunner
from .vocab import GeneVocabulary

__all__ = [
    "FAMILIES",
    "FAMILY_DEFAULTS",
    "MODELS",
    "GeneVocabulary",
    "ModelFamily",
    "ModelOption",
    "ModelRunner",
    "ModelSpec",
    "ResourceProfile",
    "fixture_info",
    "get_family",
    "get_model",
    "is_fixture_cache",
]
