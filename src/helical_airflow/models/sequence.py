"""What every sequence family (HyenaDNA, Caduceus, Evo 2, Helix-mRNA, Mamba2-mRNA) shares.

- `SEQUENCE_OPTIONS`: the model options of a sequence input (id/sequence column of a table, the too-long
  policy); as model options they are run parameters, part of the run key, `--option`/the DAG's model_options;
- `no_vocabulary`: sequence models have no gene vocabulary (the registry's `vocabulary` hook);
- `SequenceRunner`: the adapter base. `embed(records)` cuts each record into what the model reads
  (seqio.pieces: itself, truncated, or windows), embeds the pieces through the family's `_embed_helical` (helical's
  own process_data / get_embeddings) in groups of equal length, so no piece is ever padded next to a longer one
  and an embedding never depends on the other records of the shard, then mean-pools each record's windows.
"""

from __future__ import annotations

import json
import logging
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

import numpy as np

from ..seqio import pieces
from ..settings import export
from ..spec import TooLong
from .fixture_io import run_child
from .profiles import ModelOption
from .runner import SettledRunner, check_output, take_settings
from .vocab import GeneVocabulary

if TYPE_CHECKING:
    from ..seqio import Record
    from .fixture_io import FixtureContext
    from .profiles import ModelSpec
    from .runner import RunSettings

log = logging.getLogger(__name__)

SEQUENCE_OPTIONS: tuple[ModelOption, ...] = (
    ModelOption(name="id_column", default="id", help="table inputs: the column holding each record's id"),
    ModelOption(name="sequence_column", default="sequence", help="table inputs: the column holding the sequence"),
    ModelOption(
        name="too_long",
        default="error",
        choices=get_args(TooLong),
        help="a record longer than the model's context: error (E137), truncate to the context, or window (cut "
        "into context-long windows whose embeddings are mean-pooled)",
    ),  # fmt: skip
)


def no_vocabulary(spec: ModelSpec, options: Mapping[str, str], models_dir: Path) -> GeneVocabulary:
    """Sequence models read nucleotides, not genes."""
    return GeneVocabulary(symbols=frozenset(), ensembl=frozenset(), native="symbol", mapping_file=None)


class SequenceRunner(SettledRunner, ABC):
    """A loaded sequence model: `embed(records)` -> (n_records, dim) float32, rows in the records' order."""

    engine = "helical"

    def __init__(self, spec: ModelSpec, settings: RunSettings, vocab: GeneVocabulary) -> None:
        take_settings(self, spec, settings)
        self.context = int(spec.max_length or 0)
        self.too_long = settings.options.get("too_long", "error")
        self.model: Any = self.load_model()

    @abstractmethod
    def load_model(self) -> Any: ...

    @property
    @abstractmethod
    def embedding_dim(self) -> int: ...

    @abstractmethod
    def _embed_helical(self, sequences: list[str]) -> np.ndarray:
        """(len(sequences), dim) for sequences that all have the same length, through helical's own code."""

    def embed(self, records: Sequence[Record]) -> np.ndarray:
        parts: list[str] = []
        owner: list[int] = []
        for i, record in enumerate(records):
            for piece in pieces(record.sequence, self.context, self.too_long):  # type: ignore[arg-type]
                parts.append(piece)
                owner.append(i)
        out = np.zeros((len(parts), self.embedding_dim), dtype=np.float32)
        by_length: dict[int, list[int]] = {}
        for j, piece in enumerate(parts):
            by_length.setdefault(len(piece), []).append(j)
        for _, members in sorted(by_length.items()):
            for start in range(0, len(members), self.batch_size):
                chunk = members[start : start + self.batch_size]
                out[chunk] = check_output(self._embed_helical([parts[j] for j in chunk]), len(chunk), self.spec)
        owners = np.asarray(owner)
        pooled = np.zeros((len(records), self.embedding_dim), dtype=np.float32)
        np.add.at(pooled, owners, out)
        counts = np.bincount(owners, minlength=len(records)).astype(np.float32)
        return pooled / counts[:, None]


def mean_over_tokens(hidden: np.ndarray, input_ids: np.ndarray, pad_id: int | None) -> np.ndarray:
    """Mean of the token states that are not padding: (n, L, d) -> (n, d)."""
    hidden = np.asarray(hidden, dtype=np.float32)
    if pad_id is None:
        return hidden.mean(axis=1)
    keep = (np.asarray(input_ids) != pad_id)[..., None].astype(np.float32)
    return (hidden * keep).sum(axis=1) / np.maximum(keep.sum(axis=1), 1.0)


def last_real_token(hidden: np.ndarray, special_tokens_mask: np.ndarray) -> np.ndarray:
    """The state of each sequence's last token that is not special (padding, [SEP]): (n, L, d) -> (n, d). For a
    causal model (Mamba2, Helix-mRNA) it is the one state that has read the whole sequence."""
    hidden = np.asarray(hidden, dtype=np.float32)
    real = np.asarray(special_tokens_mask) == 0
    if not real.any(axis=1).all():
        raise ValueError("a sequence has no token that is not special")
    last = real.shape[1] - 1 - np.argmax(real[:, ::-1], axis=1)
    return hidden[np.arange(hidden.shape[0]), last]


def local_hub_folder(folder: Path) -> str:
    """A hub model helical loads with `from_pretrained(config["model_name"])`, read from a local folder instead of
    the hub repo id: transformers then opens the folder's files and asks the hub for nothing. The hub is also put
    offline (the environment, and huggingface_hub's constant read at its import) so that nothing leaves the machine
    should a file be missing; a missing file is then an error, never a download into the (fixture) cache."""
    import huggingface_hub.constants as hub

    export("HF_HUB_OFFLINE", "1")
    export("TRANSFORMERS_OFFLINE", "1")
    hub.HF_HUB_OFFLINE = True
    return str(folder)


class HubCopy:
    """A hub model repo kept as a local folder under the models dir, `<family>/<owner>--<name>/`, holding the files
    transformers' from_pretrained reads (helical has no `list_of_files_to_download` for these models): the files
    list, helical's own view of it, and the fixture written by a child script that save_pretrained's into a folder.
    """

    FILENAMES = ("config.json", "model.safetensors", "tokenizer_config.json")

    def __init__(self, family: str, repo: str) -> None:
        self.family, self.repo = family, repo

    def folder(self, repo: str | None = None) -> str:
        """The local copy of the hub repo, relative to the models dir."""
        return f"{self.family}/{(repo or self.repo).replace('/', '--')}"

    def files(self, model_name: str, options: Mapping[str, str]) -> list[str]:
        return [f"{self.folder()}/{name}" for name in self.FILENAMES]

    def helical_files(self, helical_repo: str) -> list[str]:
        """The same list built from the repo helical's config names and transformers' own file names (tests
        compare it with `files`)."""
        from transformers.tokenization_utils_base import TOKENIZER_CONFIG_FILE
        from transformers.utils import CONFIG_NAME, SAFE_WEIGHTS_NAME

        return [
            f"{self.folder(helical_repo)}/{name}" for name in (CONFIG_NAME, SAFE_WEIGHTS_NAME, TOKENIZER_CONFIG_FILE)
        ]

    def build_fixture(self, ctx: FixtureContext, spec: ModelSpec, child: str) -> dict[str, Any]:
        """Run `child` (argv: [seed, out folder]; prints a JSON line of facts) and copy the folder into the cache."""
        with tempfile.TemporaryDirectory() as tmp:
            info = json.loads(run_child(child, ctx.stable_seed(spec.helical_model_name), tmp).strip().splitlines()[-1])
            for rel, name in zip(self.files(spec.helical_model_name, {}), self.FILENAMES, strict=True):
                ctx.write(rel, (Path(tmp) / name).read_bytes())
        return info
