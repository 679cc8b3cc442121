"""Versions recorded in plans and manifests, read without importing heavy packages."""

from __future__ import annotations

from importlib import metadata

from . import __version__

TRACKED = ("helical", "torch", "transformers", "anndata", "numpy", "h5py", "apache-airflow")


def package_versions() -> dict[str, str]:
    found = {"helical-airflow": __version__}
    for name in TRACKED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def code_version() -> str:
    """What the run_key depends on: this package and the helical it drives."""
    versions = package_versions()
    return f"helical-airflow={__version__};helical={versions.get('helical', 'missing')}"
