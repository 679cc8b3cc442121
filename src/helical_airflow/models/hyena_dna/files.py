"""HyenaDNA's files in helical's cache (helical 3.1.4's HyenaDNAConfig): one checkpoint per model."""

from __future__ import annotations

from collections.abc import Mapping


def files(model_name: str, options: Mapping[str, str]) -> list[str]:
    return [f"hyena_dna/{model_name}.weights.ckpt"]


def helical_files(model_name: str, options: Mapping[str, str]) -> list[str]:
    """helical's own list (imports helical; tests compare it with `files`)."""
    from helical.models.hyena_dna import HyenaDNAConfig

    return list(HyenaDNAConfig(model_name=model_name).config["list_of_files_to_download"])
