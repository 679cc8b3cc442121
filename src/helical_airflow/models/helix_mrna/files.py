"""Helix-mRNA's files (helical 3.1.4's HelixmRNAConfig).

helical has no `list_of_files_to_download` for it: `HelixmRNA.__init__` (helical/models/helix_mrna/model.py:73-84)
calls `HelixmRNAPretrainedModel` / `HelixmRNAPretrainedConfig` / its `CharTokenizer.from_pretrained(
config["model_name"])`, the hub repo `helical-ai/Helix-mRNA` (helix_mrna_config.py:37). The adapter gives it a local
folder under the models dir instead, `helix_mrna/helical-ai--Helix-mRNA/`, holding the files those three calls read:
config.json, model.safetensors, tokenizer_config.json (transformers' CONFIG_NAME, SAFE_WEIGHTS_NAME,
TOKENIZER_CONFIG_FILE). A real copy: `huggingface-cli download helical-ai/Helix-mRNA --local-dir <models
dir>/helix_mrna/helical-ai--Helix-mRNA` where the hub is reachable (not checked here: no network; if the repo ships
pytorch_model.bin instead of model.safetensors, E202 names the missing file).
"""

from __future__ import annotations

from collections.abc import Mapping

from ..sequence import HubCopy

REPO = "helical-ai/Helix-mRNA"
COPY = HubCopy("helix_mrna", REPO)
FILENAMES = COPY.FILENAMES
folder = COPY.folder
files = COPY.files


def helical_files(model_name: str, options: Mapping[str, str]) -> list[str]:
    """From helical's own config (imports helical): the repo its from_pretrained calls name."""
    from helical.models.helix_mrna import HelixmRNAConfig

    return COPY.helical_files(HelixmRNAConfig().config["model_name"])
