"""UCE's files in helical's cache (helical 3.1.4's UCEConfig) and the genes it knows.

The genes: UCE looks each input gene up, case-insensitively, among the keys of the species' ESM2 protein
embedding file (helical.models.uce.gene_embeddings.load_gene_embeddings_adata), then places it on its
chromosome through `species_chrom.csv` by the upper-cased symbol (uce_utils.get_positions, which raises a
KeyError for a gene missing there and miscounts one listed twice). The vocabulary is the keys that pass both,
read without torch: the .pt file is a pickled dict whose keys are read with an unpickler that loads no tensor
and runs no code.
"""

from __future__ import annotations

import collections
import csv
import io
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..vocab import GeneVocabulary, from_symbols

if TYPE_CHECKING:
    from ..profiles import ModelSpec

#: species option -> protein embedding file (helical.models.uce.uce_config SPECIES_GENE_EMBEDDINGS["ESM2"])
SPECIES_FILES = {
    "human": "Homo_sapiens.GRCh38.gene_symbol_to_embedding_ESM2.pt",
    "mouse": "Mus_musculus.GRCm39.gene_symbol_to_embedding_ESM2.pt",
    "frog": "Xenopus_tropicalis.Xenopus_tropicalis_v9.1.gene_symbol_to_embedding_ESM2.pt",
    "zebrafish": "Danio_rerio.GRCz11.gene_symbol_to_embedding_ESM2.pt",
    "mouse_lemur": "Microcebus_murinus.Mmur_3.0.gene_symbol_to_embedding_ESM2.pt",
    "pig": "Sus_scrofa.Sscrofa11.1.gene_symbol_to_embedding_ESM2.pt",
    "macaca_fascicularis": "Macaca_fascicularis.Macaca_fascicularis_6.0.gene_symbol_to_embedding_ESM2.pt",
    "macaca_mulatta": "Macaca_mulatta.Mmul_10.gene_symbol_to_embedding_ESM2.pt",
}
MODEL_NAMES = ("4layer_model", "33l_8ep_1024t_1280")

TOKENS = "uce/all_tokens.torch"
CHROM_CSV = "uce/species_chrom.csv"
OFFSETS = "uce/species_offsets.json"


def checkpoint(model_name: str) -> str:
    return f"uce/{model_name}.torch"


def protein_embeddings(species: str) -> str:
    return f"uce/protein_embeddings/{SPECIES_FILES[species]}"


def args_file(model_name: str) -> str:
    """UCEConfig settings a fixture's tiny checkpoint was built with (absent from real caches: helical's
    defaults apply). helical reads only the files of its own list, so this one is never touched by it."""
    return f"uce/{model_name}.args.json"


def files(model_name: str, options: Mapping[str, str]) -> list[str]:
    return [TOKENS, checkpoint(model_name), CHROM_CSV, OFFSETS, protein_embeddings(options.get("species", "human"))]


def helical_files(model_name: str, options: Mapping[str, str]) -> list[str]:
    """helical's own list (imports helical; tests compare it with `files`)."""
    from helical.models.uce import UCEConfig

    config = UCEConfig(model_name=model_name, species=options.get("species", "human"))
    return list(config.config["list_of_files_to_download"])


class _KeysOnly(pickle.Unpickler):
    """Unpickles a torch.save'd dict without torch: tensors become None, storages are never read, and no class
    outside an allow-list can be named (so no code runs)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" or module.startswith("torch."):
            return _nothing
        raise pickle.UnpicklingError(f"unexpected {module}.{name} in a protein embedding file")

    def persistent_load(self, pid: Any) -> None:
        return None


def _nothing(*args: Any, **kwargs: Any) -> None:
    return None


def embedding_keys(path: Path) -> list[str]:
    """The gene symbols of a protein embedding file (torch's zip format, or its legacy sequential pickles)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            name = next(n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl")
            obj = _KeysOnly(io.BytesIO(archive.read(name))).load()
    else:  # torch < 1.6: magic number, protocol version, system info, then the object
        with path.open("rb") as handle:
            for _ in range(3):
                _KeysOnly(handle).load()
            obj = _KeysOnly(handle).load()
    return [str(key) for key in obj]


def chromosome_symbols(path: Path, species: str) -> set[str]:
    """Symbols listed exactly once for `species` in species_chrom.csv (helical's .loc needs one row a gene)."""
    with path.open(newline="") as handle:
        counts = collections.Counter(row["gene_symbol"] for row in csv.DictReader(handle) if row["species"] == species)
    return {symbol for symbol, n in counts.items() if n == 1}


def known_symbols(models_dir: Path, species: str) -> list[str]:
    placed = chromosome_symbols(models_dir / CHROM_CSV, species)
    return [key for key in embedding_keys(models_dir / protein_embeddings(species)) if key.upper() in placed]


def vocabulary(spec: ModelSpec, options: Mapping[str, str], models_dir: Path) -> GeneVocabulary:
    return from_symbols(known_symbols(models_dir, options.get("species", "human")), models_dir)
