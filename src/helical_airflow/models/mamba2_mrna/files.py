"""Mamba2-mRNA's files (helical 3.1.4's Mamba2mRNAConfig).

helical has no `list_of_files_to_download` for it: `Mamba2mRNA.__init__` (helical/models/mamba2_mrna/model.py:57-63)
calls transformers' `Mamba2Model` / `Mamba2Config` / its `CharTokenizer.from_pretrained(config["model_name"])`, the
hub repo `helical-ai/mamba2-mRNA` (mamba2_mrna_config.py:30). The adapter gives it a local folder under the models
dir instead, `mamba2_mrna/helical-ai--mamba2-mRNA/`, holding the files those three calls read: config.json,
model.safetensors, tokenizer_config.json (transformers' CONFIG_NAME, SAFE_WEIGHTS_NAME, TOKENIZER_CONFIG_FILE). A
real copy: `huggingface-cli download helical-ai/mamba2-mRNA --local-dir <models
dir>/mamba2_mrna/helical-ai--mamba2-mRNA` where the hub is reachable (not checked here: no network; if the repo
ships pytorch_model.bin instead of model.safetensors, E202 names the missing file).
"""

from __future__ import annotations

from collections.abc import Mapping

from ..sequence import HubCopy

REPO = "helical-ai/mamba2-mRNA"
COPY = HubCopy("mamba2_mrna", REPO)
FILENAMES = COPY.FILENAMES
folder = COPY.folder
files = COPY.files


def helical_files(model_name: str, options: Mapping[str, str]) -> list[str]:
    """From helical's own config (imports helical): the repo its from_pretrained calls name."""
    from helical.models.mamba2_mrna import Mamba2mRNAConfig

    return COPY.helical_files(Mamba2mRNAConfig().config["model_name"])
