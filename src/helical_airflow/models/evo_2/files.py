"""Evo 2's weights: helical's `_load_evo2_model` fetches `<model_name>.pt` from the Hugging Face repo
`arcinstitute/<model_name>` with hf_hub_download (the hub cache, HF_HUB_CACHE), not from helical's own store.
They are listed under `evo_2/hub/` of the models folder in the hub cache layout."""

from __future__ import annotations

from collections.abc import Mapping

#: helical model name -> (hub repo, file); Evo2Config.model_map's model_hf_name and model_name
REPOS = {
    "evo2-1b-base": ("arcinstitute/evo2_1b_base", "evo2_1b_base.pt"),
    "evo2-7b-base": ("arcinstitute/evo2_7b_base", "evo2_7b_base.pt"),
    "evo2-7b": ("arcinstitute/evo2_7b", "evo2_7b.pt"),
    "evo2-40b-base": ("arcinstitute/evo2_40b_base", "evo2_40b_base.pt"),
    "evo2-40b": ("arcinstitute/evo2_40b", "evo2_40b.pt"),
}
HUB_CACHE = "evo_2/hub"


def files(model_name: str, options: Mapping[str, str]) -> list[str]:
    repo, name = REPOS[model_name]
    return [f"{HUB_CACHE}/models--{repo.replace('/', '--')}/snapshots/main/{name}"]


def helical_files(model_name: str, options: Mapping[str, str]) -> list[str]:
    """helical's own names (imports helical; tests compare it with `files`): Evo2Config's repo and model name, the
    file `_load_evo2_model` asks hf_hub_download for (`<model_name>.pt`)."""
    from helical.models.evo_2.evo_2_config import Evo2Config

    config = Evo2Config(model_name=model_name).config["model_map"]
    repo = config["model_hf_name"]
    return [f"{HUB_CACHE}/models--{repo.replace('/', '--')}/snapshots/main/{config['model_name']}.pt"]
