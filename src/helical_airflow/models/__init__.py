"""The models: one table of names and resource profiles, adapters over real helical, offline fixtures.

Importing this package imports neither helical nor torch (the Airflow scheduler imports it);
`ModelSpec.load_runner` imports helical when a shard is embedded.
"""

from .cache import fixture_info, is_fixture_cache
from .profiles import FAMILY_DEFAULTS, MODELS, ModelSpec, ResourceProfile, get_model
from .runner import ModelRunner
from .vocab import GeneVocabulary

__all__ = [
    "FAMILY_DEFAULTS",
    "MODELS",
    "GeneVocabulary",
    "ModelRunner",
    "ModelSpec",
    "ResourceProfile",
    "fixture_info",
    "get_model",
    "is_fixture_cache",
]
