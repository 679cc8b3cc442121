"""What every model adapter shares: the runner interface, offline-safe loading, precision, input prep.

Adapters call helical's own `process_data` and `get_embeddings`; this module only prepares what
helical is given and how it is loaded. helical and torch are imported inside functions, never at
module import, because the scheduler side imports `helical_airflow.models`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sys
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import ConfigError, ShardError
from ..settings import helical_cache_prefix
from ..spec import Engine, Precision
from . import cache
from .vocab import ENSEMBL_RE, CanonicalGenes, is_ensembl  # noqa: F401 - ENSEMBL_RE, is_ensembl: re-exported

if TYPE_CHECKING:
    import anndata

    from .profiles import ModelSpec
    from .vocab import GeneVocabulary

log = logging.getLogger(__name__)


class ModelRunner[Rows](Protocol):
    """A loaded model that embeds one shard at a time: `Rows` is what a shard's rows are for its modality
    (modality.Modality.read_shard): an AnnData for cells (HelicalRunner, `CellRunner`), a list of seqio.Record for
    records (models.sequence.SequenceRunner)."""

    spec: ModelSpec
    device: str
    precision: Precision
    batch_size: int
    engine: Engine

    @property
    def embedding_dim(self) -> int: ...

    def embed(self, rows: Rows) -> np.ndarray:
        """(n_rows, dim) float32 embeddings, in the rows' order."""
        ...


#: a runner of single-cell models: it embeds an AnnData of counts
type CellRunner = ModelRunner[anndata.AnnData]


@dataclass(frozen=True)
class RunSettings:
    """How a runner runs, resolved once (models.registry.load_runner): CPU runs are fp32, or bf16 when asked for by
    name (embed.effective_precision; reduced_precision autocasts them)."""

    device: str
    precision: Precision
    batch_size: int
    engine: Engine
    seed: int
    options: dict[str, str]  # the family's model options (species, ...), defaults filled in
    cache_dir: str | None  # the prefix helical reads its files under


class SettledRunner:
    """The settings every runner (cells: HelicalRunner; sequences: models.sequence.SequenceRunner) keeps, set by
    take_settings: declared here so the adapters' `self.device`, `self.spec`, ... are typed."""

    spec: ModelSpec
    settings: RunSettings
    device: str
    precision: Precision
    batch_size: int
    seed: int
    engine: Engine
    options: dict[str, str]
    cache_dir: str | None


def take_settings(runner: SettledRunner, spec: ModelSpec, settings: RunSettings) -> None:
    """What every runner (cells: HelicalRunner; sequences: models.sequence.SequenceRunner) keeps of its settings."""
    runner.spec, runner.settings = spec, settings
    runner.device, runner.precision, runner.batch_size = settings.device, settings.precision, settings.batch_size
    runner.seed, runner.engine, runner.options = settings.seed, settings.engine, settings.options
    runner.cache_dir = settings.cache_dir


class HelicalRunner(SettledRunner, ABC):
    """What every adapter shares: the run's settings, the model's vocabulary, and `embed` around helical.

    An adapter loads its helical model in `load_model` (called last in __init__, so the settings, the cache
    prefix and the vocabulary are set) and runs it on clean, known-gene cells in `_embed_helical`, with the genes
    in the canonical order and id system (`canonical_input`): the embedding does not depend on the file's layout.
    """

    engine: Engine = "helical"
    #: True when helical divides each cell by the total of *all* its input genes (Geneformer's n_counts, GenePT's
    #: normalize_total), so the genes outside the vocabulary reach helical as one column holding their sum (the
    #: library size is kept, their names and order are not); False: helical drops them before any arithmetic
    library_size_from_all_genes: bool = False

    def __init__(self, spec: ModelSpec, settings: RunSettings, vocab: GeneVocabulary) -> None:
        take_settings(self, spec, settings)
        self.vocab = vocab
        #: the genes of the last shard embedded, as the model saw them (the manifest records their hash)
        self.canonical_genes: CanonicalGenes | None = None
        self.model: Any = self.load_model()

    @abstractmethod
    def load_model(self) -> Any:
        """helical's model object for self.spec, on self.device."""

    @property
    @abstractmethod
    def embedding_dim(self) -> int: ...

    @abstractmethod
    def _embed_helical(self, data: anndata.AnnData) -> np.ndarray:
        """Embeddings of cells that each have a known gene, from `data` as canonical_input made it: the known genes
        as the model's own ids (Ensembl without version, or symbols), sorted, plus OTHER_GENES when
        `library_size_from_all_genes`."""

    def embed(self, adata: anndata.AnnData) -> np.ndarray:
        data = clean_input(adata)
        names = list(data.var_names)
        # gene ids outside the vocabulary's own system reach it through helical's symbol <-> Ensembl table
        native_ensembl = self.vocab.native == "ensembl"
        require_mapping(self.cache_dir, any(is_ensembl(n) != native_ensembl for n in names), self.spec)
        data, self.canonical_genes = canonical_input(data, self.vocab, self.library_size_from_all_genes)
        mask = np.asarray(data.var_names != OTHER_GENES)
        return embed_known_cells(data, mask, self.embedding_dim, self._embed_helical, self.spec)


#: the column that holds, per cell, the sum of the genes the model does not know (never a gene id: no Ensembl
#: pattern, in no vocabulary); only for families whose helical code normalises by every input gene
OTHER_GENES = "helical-airflow:other-genes"


def canonical_input(
    data: anndata.AnnData, vocab: GeneVocabulary, keep_library_size: bool
) -> tuple[anndata.AnnData, CanonicalGenes]:
    """`data` with its genes in one canonical order and id system, whatever the file's layout.

    Every known gene becomes the model's own id (`GeneVocabulary.canonical_id`: Ensembl without its version, or
    the symbol), the columns are sorted by that id, and columns naming the same gene (`ENSG...1` and `ENSG...2`,
    or a symbol and its id) are summed into one. helical then sees the same AnnData for the same cells, so what it
    does in input order (UCE samples genes over the column index, TranscriptFormer and Cell2Sentence break ties of
    equal counts in column order, scGPT bins with a per-cell generator over the columns) is done in this order.
    Genes the model does not know are dropped, or summed into OTHER_GENES (`keep_library_size`). Integer counts sum
    exactly. One sparse product does it all: X @ A, A the (input gene -> canonical column) 0/1 matrix.
    """
    import anndata as ad

    names = [str(n) for n in data.var_names]
    ids = vocab.canonical_ids(names)
    genes = sorted({i for i in ids if i is not None})
    column = {gene: k for k, gene in enumerate(genes)}
    other = keep_library_size and any(i is None for i in ids)
    rows = [j for j, i in enumerate(ids) if i is not None or other]
    cols = [column[ids[j]] if ids[j] is not None else len(genes) for j in rows]  # type: ignore[index]
    x: Any = data.X
    dtype = x.dtype if np.issubdtype(x.dtype, np.number) else np.float32
    to_canonical = sp.csr_matrix(
        (np.ones(len(rows), dtype=dtype), (rows, cols)), shape=(len(names), len(genes) + int(other))
    )
    merged = len(rows) - len(set(cols))
    if merged:
        log.info("%d input columns name a gene another column names too; their counts are summed", merged)
    if sp.issparse(x):
        counts: Any = sp.csr_matrix(x @ to_canonical)
        counts.sum_duplicates()
        counts.eliminate_zeros()
    else:
        counts = np.asarray(to_canonical.T @ np.asarray(x).T).T
    canonical = ad.AnnData(
        X=counts,
        obs=pd.DataFrame(index=data.obs_names.copy()),
        var=pd.DataFrame(index=pd.Index(genes + ([OTHER_GENES] if other else []), name=None)),
    )
    return canonical, CanonicalGenes(tuple(genes))


@contextlib.contextmanager
def private_workdir(prefix: str) -> Iterator[str]:
    """A fresh temporary folder as the working directory while helical runs, removed afterwards: for families whose
    helical code writes files under fixed names into the current directory (UCE's `./<name>_counts.npz`,
    TranscriptFormer's `./inference_results`), so two shards never share a name."""
    previous = os.getcwd()
    with tempfile.TemporaryDirectory(prefix=f"helical-airflow-{prefix}-") as tmp:
        os.chdir(tmp)
        try:
            yield tmp
        finally:
            os.chdir(previous)


def helical_prefix() -> str | None:
    """The cache prefix helical uses in this process (it reads the variable once, at import)."""
    if "helical.constants.paths" in sys.modules:
        from helical.constants.paths import CACHE_DIR_HELICAL

        # <prefix>/.cache/helical/models -> <prefix>
        return str(CACHE_DIR_HELICAL.parent.parent.parent)
    return helical_cache_prefix()


def drop_helical_log_handler() -> None:
    """Print each log line once.

    Importing helical adds its own StreamHandler to the root logger, so next to the CLI's (or Airflow's)
    handler every line came out twice, in two formats. helical's is dropped when the root logger has another.
    """
    import helical

    root = logging.getLogger()
    handler = getattr(helical, "handler", None)
    if handler in root.handlers and len(root.handlers) > 1:
        root.removeHandler(handler)


def trust_cached_files(files: list[str], cache_dir: str | None) -> None:
    """Make helical's download step a no-op for files already in the cache, for every family.

    helical's Downloader checks each cached file against its remote with a HEAD request (10 s timeout each
    when a firewall drops packets) and, when the remote answers with a different size, deletes the file and
    downloads the remote copy: that would swap a fixture for real weights behind the manifest's back.
    Registering the files in its own `_validated` set (what it does itself after one check) skips
    both; nothing on our code path touches the network. `files` are relative to the models folder.
    """
    from helical.utils.downloader import Downloader

    root = cache.models_dir(cache_dir)
    for rel in [*files, cache.ENSEMBL_MAPPING_FILE]:
        if (root / rel).is_file():
            Downloader._validated.add(root / rel)


def require_mapping(cache_dir: str | None, needed: bool, spec: ModelSpec) -> None:
    """helical maps between gene symbols and Ensembl ids with a table it downloads on first use."""
    if needed and not (cache.models_dir(cache_dir) / cache.ENSEMBL_MAPPING_FILE).is_file():
        raise ConfigError(
            "E202",
            f"{spec.name!r} needs helical's gene symbol <-> Ensembl table "
            f"({cache.ENSEMBL_MAPPING_FILE}) to read this input's gene ids, and the cache lacks it",
            cache.missing_hint(spec.name, has_fixture=True),  # every fixture build writes the table
        )


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def precision_scope(device: str, precision: Precision) -> Iterator[None]:
    """Run helical's forward passes in `precision`.

    helical's get_embeddings wraps its loop in `torch.amp.autocast("cuda")` with no dtype, which takes
    torch's current autocast dtype for CUDA (fp16 by default). Setting that dtype here (fp32 turns
    the casts into no-ops) gives the profile's precision without touching helical's code.
    """
    if device == "cpu":
        yield
        return
    import torch

    wanted = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    previous = torch.get_autocast_dtype("cuda")
    torch.set_autocast_dtype("cuda", wanted)
    try:
        yield
    finally:
        torch.set_autocast_dtype("cuda", previous)


@contextlib.contextmanager
def reduced_precision(device: str, precision: Precision) -> Iterator[None]:
    """A CPU run asked for bf16 runs under torch's CPU autocast (bfloat16): the weights stay fp32, matmuls and
    convolutions run in bf16, whatever the family (helical's own autocast is CUDA-only). Everything else runs as
    is: on a GPU the adapters apply the precision (precision_scope, their own autocast)."""
    if device != "cpu" or precision != "bf16":
        yield
        return
    import torch

    with torch.autocast("cpu", dtype=torch.bfloat16):
        yield


def clean_input(adata: anndata.AnnData) -> anndata.AnnData:
    """A fresh AnnData holding only the counts and the gene ids, sharing X with the caller's.

    helical writes into obs/var (`total_counts`, `index`, `ensembl_id`) and reads some obs columns
    as instructions: `filter_pass` drops cells (rows would go missing), `n_counts` replaces the
    library size, `batch_id` switches scGPT modes. Embeddings must depend on the counts alone, so
    obs is reduced to the cell names and var to the gene names.
    """
    import anndata as ad

    x: Any = adata.X
    if x is None:
        raise ShardError("E311", "the shard has no count matrix", "check the input's X or --layer")
    if not sp.issparse(x):
        x = np.asarray(x)
    elif not sp.isspmatrix_csr(x):
        x = sp.csr_matrix(x)
    return ad.AnnData(
        X=x,
        obs=pd.DataFrame(index=pd.Index(adata.obs_names.astype(str), name=None)),
        var=pd.DataFrame(index=pd.Index(adata.var_names.astype(str), name=None)),
    )


def check_output(embeddings: Any, n_obs: int, spec: ModelSpec) -> np.ndarray:
    out = np.asarray(embeddings, dtype=np.float32)
    if out.ndim != 2 or out.shape[0] != n_obs:
        raise ShardError(
            "E302",
            f"{spec.name} returned embeddings of shape {out.shape} for {n_obs} cells",
            "report this as a bug with the manifest attached",
        )
    return out


def known_gene_mask(var_names: list[str], symbols: frozenset[str], ensembl: frozenset[str]) -> np.ndarray:
    """Which genes helical will find in the vocabulary: Ensembl ids (version stripped) or symbols."""
    return np.array(
        [name.split(".", 1)[0] in ensembl if is_ensembl(name) else name in symbols for name in var_names],
        dtype=bool,
    )


def cells_with_known_genes(adata: anndata.AnnData, gene_mask: np.ndarray) -> np.ndarray:
    """Cells with at least one count on a gene the model knows; the others have no embedding.

    helical cannot embed a cell with no known expressed gene (scGPT fails on the empty row, Geneformer
    averages zero tokens into NaN), and one such cell must not sink the whole shard.
    """
    x = adata.X[:, np.flatnonzero(gene_mask)]
    totals = np.asarray(x.sum(axis=1)).ravel() if sp.issparse(x) else np.asarray(x).sum(axis=1)
    return np.asarray(totals > 0)


def embed_known_cells(
    adata: anndata.AnnData, gene_mask: np.ndarray, dim: int, embed: Any, spec: ModelSpec
) -> np.ndarray:
    """Run `embed` (helical) on the cells that have known genes; the rest get NaN rows, logged."""
    keep = cells_with_known_genes(adata, gene_mask)
    out = np.full((adata.n_obs, dim), np.nan, dtype=np.float32)
    if keep.any():
        subset = adata if keep.all() else adata[np.flatnonzero(keep)].copy()
        out[keep] = check_output(embed(subset), int(keep.sum()), spec)
    if not keep.all():
        log.warning(
            "%d of %d cells express no gene in the %s vocabulary; their embeddings are NaN",
            int((~keep).sum()),
            adata.n_obs,
            spec.name,
        )
    return out
