"""Caduceus's files in helical's cache (helical 3.1.4's CaduceusConfig.list_of_files_to_download)."""

from __future__ import annotations

from collections.abc import Mapping


def files(model_name: str, options: Mapping[str, str]) -> list[str]:
    return [f"caduceus/{model_name}/model.safetensors", f"caduceus/{model_name}/config.json"]


def helical_files(model_name: str, options: Mapping[str, str]) -> list[str]:
    from helical.models.caduceus.caduceus_config import CaduceusConfig

    return list(CaduceusConfig(model_name=model_name).list_of_files_to_download)
