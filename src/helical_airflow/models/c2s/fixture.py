"""A tiny random Cell2Sentence (Gemma-2) in the Hugging Face hub cache layout helical's Cell2Sen reads offline.

Under `<models dir>/c2s_model_<size>/models--vandijklab--C2S-Scale-Gemma-2-<size>/`: refs/main naming the snapshot,
whose folder holds exactly helical's list: config.json and generation_config.json (a tiny Gemma2ForCausalLM),
the weights split into helical's number of shards with their index, and a tokenizer transformers loads offline:
a word-level tokenizer.json (the gene symbols and the words of helical's embedding prompt, one token each;
anything else is <unk>) with tokenizer_config.json and special_tokens_map.json. Left padding, like Gemma's.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..fixture_io import FixtureContext, json_bytes
from .files import REVISION, SHARDS, filenames, repo_dir, snapshot

if TYPE_CHECKING:
    from ..profiles import ModelSpec

#: the published architectures (google/gemma-2-2b, gemma-2-27b), used for shape="real"
REAL = {
    "2B": {"hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26, "num_attention_heads": 8,
           "num_key_value_heads": 4, "head_dim": 256},
    "27B": {"hidden_size": 4608, "intermediate_size": 36864, "num_hidden_layers": 46, "num_attention_heads": 32,
            "num_key_value_heads": 16, "head_dim": 128},
}  # fmt: skip
TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
        "num_key_value_heads": 1, "head_dim": 16}  # fmt: skip
SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>")
#: organisms the prompt words cover (any other organism is <unk>)
ORGANISMS = ("human", "mouse", "Homo", "sapiens", "Mus", "musculus", "unknown")


def prompt_words() -> list[str]:
    """The words of helical's embedding prompt (helical.models.c2s.config.EMBEDDING_PROMPT, read without helical:
    importing it would fix helical's cache prefix), split on whitespace as the tokenizer splits."""
    prompt = (
        "You are given a list of genes in descending order of expression levels in a {organism} cell. \n"
        "Genes: {cell_sentence} \n Using this information, predict the cell type."
    )
    return [w for w in prompt.split() if "{" not in w]


def tokenizer_files(symbols: list[str]) -> dict[str, bytes]:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = list(dict.fromkeys([*SPECIALS, *prompt_words(), *ORGANISMS, *symbols]))
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    bos = ("<bos>", words.index("<bos>"))
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[bos])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>", pad_token="<pad>",
        padding_side="left",
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        fast.save_pretrained(tmp)
        out = {name: (Path(tmp) / name).read_bytes() for name in ("tokenizer.json", "tokenizer_config.json")}
    out["special_tokens_map.json"] = json_bytes(
        {"bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>", "pad_token": "<pad>"}
    )
    return out


def build(ctx: FixtureContext, spec: ModelSpec) -> dict[str, Any]:
    import torch
    from safetensors.torch import save
    from transformers import Gemma2Config, Gemma2ForCausalLM, GenerationConfig

    size = spec.helical_model_name
    dims: dict[str, Any] = REAL[size] if ctx.shape == "real" else TINY
    tokenizer = tokenizer_files(ctx.symbols)
    vocab_size = len(json.loads(tokenizer["tokenizer.json"])["model"]["vocab"])
    config = Gemma2Config(
        vocab_size=vocab_size, max_position_embeddings=8192, pad_token_id=0, eos_token_id=1, bos_token_id=2,
        **dims,
    )  # fmt: skip
    torch.manual_seed(ctx.stable_seed(f"c2s-{size}"))
    model = Gemma2ForCausalLM(config).eval()
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}  # tied to embed
    base = snapshot(size)
    ctx.write(f"{repo_dir(size)}/refs/main", REVISION.encode())
    ctx.write(f"{base}/config.json", json_bytes(config.to_dict()))
    ctx.write(f"{base}/generation_config.json", json_bytes(GenerationConfig.from_model_config(config).to_dict()))
    shard_names = [n for n in filenames(size) if n.startswith("model-")]
    keys = list(state)
    groups = [keys[i :: SHARDS[size]] for i in range(SHARDS[size])]  # every shard non-empty, round robin
    weight_map = {}
    for name, group in zip(shard_names, groups, strict=True):
        ctx.write(f"{base}/{name}", save({k: state[k] for k in group}, metadata={"format": "pt"}))
        weight_map.update({k: name for k in group})
    total = sum(v.numel() * v.element_size() for v in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    ctx.write(f"{base}/model.safetensors.index.json", json_bytes(index))
    for name, data in tokenizer.items():
        ctx.write(f"{base}/{name}", data)
    return {"hidden_size": dims["hidden_size"], "layers": dims["num_hidden_layers"],
            "parameters": sum(p.numel() for p in model.parameters())}  # fmt: skip
