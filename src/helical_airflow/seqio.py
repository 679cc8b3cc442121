"""Sequence inputs: FASTA (.fa/.fasta/.fna, gzip too) and tables (.csv/.tsv/.parquet) of nucleotide sequences.

- `validate_sequences` reads the input once, streaming (never whole), and raises a coded error (E130-E140,
  inputcheck.CODES) naming the record and the fix: empty, not FASTA / not a table, missing columns, empty
  sequence, characters outside the model's alphabet (soft-masked lower case is accepted and upper-cased),
  duplicate ids, longer than the model's context (policy `too_long`: error, truncate, window), truncated gzip.
  The input is opened read-only; nothing is written until the file passed, then the record index is cached.
- the index (`RecordIndex`) is built in that same pass and cached by the input's sha256: for FASTA each record's
  byte offset (of the decompressed stream for gzip), for CSV/TSV the record count, for Parquet the row groups'
  row counts. `read_records(path, start, stop)` then reads one shard's records without loading the file:
  a seek for plain FASTA, a streamed (decompress-and-discard) seek for gzip, the overlapping row groups for
  Parquet, streamed CSV blocks for CSV/TSV.

Why not pyfaidx / Bio.SeqIO.index: both index only plain or BGZF files (ordinary gzip, what users have, is
refused) and pyfaidx writes its `.fai` next to the input, which must stay untouched (the data folder is often
read-only). The FASTA grammar needed here (header line, sequence lines) is a few lines; tables go through
pyarrow, which is already a dependency.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from . import settings
from .atomic import write_with
from .errors import InputValidationError
from .inputcheck import _check_kind, _check_unchanged, _not_found_hint, fail
from .spec import InputSummary, SequenceSummary, TooLong

if TYPE_CHECKING:
    import pandas as pd

    from .models.profiles import ModelSpec

Format = Literal["fasta", "csv", "tsv", "parquet"]
FASTA_SUFFIXES = (".fa", ".fasta", ".fna")
TABLE_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}
ALPHABETS = {"dna_sequence": "ACGTN", "rna_sequence": "ACGUN"}
#: letters a model reads as others of its alphabet. Both RNA tokenizers map T to U's token id
#: (helical/models/helix_mrna/helix_mrna_tokenizer.py:58, mamba2_mrna/mamba2_mrna_tokenizer.py:58), so an mRNA in
#: DNA letters (Ensembl's and RefSeq's cDNA files) is the same input to them; but helical's process_data refuses T
#: before its tokenizer sees it (get_valid_rna_sequence, helical/models/base_models.py:132: "ACUGNE"), so the reader
#: writes U for T (read_records). The DNA tokenizers have no U (HyenaDNA's characters ACGTN, hyena_dna/model.py:63;
#: Caduceus' the same; any other letter is [UNK]), and Evo 2's process_data checks ACTGN: a U stays E135 for them.
READ_AS: dict[str, dict[str, str]] = {"rna_sequence": {"T": "U"}}
#: the RNA families, named by E135's fix for RNA letters given to a DNA model
RNA_FAMILIES = "helix_mrna, mamba2_mrna"
IUPAC_AMBIGUOUS = frozenset("RYSWKMBDHV")  # IUPAC codes for two or more bases (N, any base, is in both alphabets)
GAPS = frozenset("-.")  # alignment gaps
#: what a sequence input's name ends in (is_sequence_path); the DAG's input_path pattern is built from the same
#: suffixes (dag_params.input_pattern), not from this pattern
SEQUENCE_PATTERN = (
    rf"\.({'|'.join(s[1:] for s in FASTA_SUFFIXES)})(\.gz)?$"
    rf"|\.({'|'.join(s[1:] for s in TABLE_SUFFIXES)})$"
)
INDEX_VERSION = 1
CSV_BLOCK = 1 << 20  # bytes pyarrow reads per CSV block: a shard read holds about this much beyond its records


@dataclass(frozen=True)
class Record:
    id: str
    sequence: str  # upper case, as validated, in the model's letters (T read as U for an RNA model: READ_AS)
    extra: dict[str, Any] = field(default_factory=dict)  # other table columns


@dataclass(frozen=True)
class Layout:
    """How to read the file: its format and, for tables, which columns are the id and the sequence."""

    format: Format
    compressed: bool
    id_column: str | None = None
    sequence_column: str | None = None


def detect_format(path: Path) -> tuple[Format, bool]:
    name = path.name.lower()
    compressed = name.endswith(".gz")
    stem = name[:-3] if compressed else name
    if stem.endswith(FASTA_SUFFIXES):
        return "fasta", compressed
    for suffix, fmt in TABLE_SUFFIXES.items():
        if stem.endswith(suffix) and not compressed:
            return fmt, False  # type: ignore[return-value]
    raise fail("E139", f"{path.name}")


def is_sequence_path(path: str | Path) -> bool:
    return bool(re.search(SEQUENCE_PATTERN, str(path).lower()))


def layout_for(path: Path, options: Mapping[str, str]) -> Layout:
    fmt, compressed = detect_format(path)
    if fmt == "fasta":
        return Layout(fmt, compressed)
    return Layout(fmt, compressed, options.get("id_column", "id"), options.get("sequence_column", "sequence"))


# --- FASTA ------------------------------------------------------------------------------------------------------


def _open_binary(path: Path, compressed: bool) -> Any:
    raw = open(path, "rb")  # noqa: SIM115 - read-only; closed by the caller's with
    return gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw


def _fasta_records(
    path: Path, compressed: bool, start_offset: int = 0, limit: int | None = None
) -> Iterator[tuple[int, str, str]]:
    """(offset of the header line, id, raw sequence) of each record from `start_offset`, at most `limit`."""
    with _open_binary(path, compressed) as fh:
        try:
            if start_offset:
                fh.seek(start_offset)  # gzip: decompresses and discards up to there (bounded memory)
            offset = start_offset
            header: tuple[int, str] | None = None
            parts: list[str] = []
            count = 0
            for line_no, raw in enumerate(fh, 1):
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                if line.startswith(">"):
                    if header is not None:
                        yield header[0], header[1], "".join(parts)
                        count += 1
                        if limit is not None and count >= limit:
                            return
                    words = line[1:].split()
                    if not words:
                        raise fail("E140", f"the header on line {line_no} (byte {offset}) of {path.name} is empty")
                    header, parts = (offset, words[0]), []
                elif line.strip():
                    if header is None:
                        raise fail("E131", f"{path.name} line {line_no} comes before any '>' header: "
                                   f"{line[:40]!r}")  # fmt: skip
                    parts.append(line.strip())
                offset += len(raw)
            if header is not None and (limit is None or count < limit):
                yield header[0], header[1], "".join(parts)
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise fail("E138", f"{path.name}: {exc}") from None


# --- tables -------------------------------------------------------------------------------------------------------


def _table_batches(path: Path, layout: Layout, columns: list[str] | None = None) -> Iterator[Any]:
    """pyarrow RecordBatches of the table, streamed."""
    import pyarrow as pa

    try:
        if layout.format == "parquet":
            import pyarrow.parquet as pq

            pf = pq.ParquetFile(path)
            yield from pf.iter_batches(batch_size=4096, columns=columns)
            return
        import pyarrow.csv as pcsv

        reader = pcsv.open_csv(
            path,
            read_options=pcsv.ReadOptions(block_size=CSV_BLOCK),
            parse_options=pcsv.ParseOptions(delimiter="\t" if layout.format == "tsv" else ","),
            convert_options=pcsv.ConvertOptions(
                include_columns=columns,
                column_types={c: pa.string() for c in (layout.id_column, layout.sequence_column) if c},
                strings_can_be_null=False,
            ),  # fmt: skip
        )
        yield from reader
    except InputValidationError:
        raise
    except (pa.ArrowInvalid, pa.ArrowKeyError, OSError, ValueError) as exc:
        text = str(exc)
        if "include_columns" in text or "No match for FieldRef" in text or "not in schema" in text.lower():
            raise fail("E133", f"{path.name}: {text.splitlines()[0]}") from None
        if isinstance(exc, OSError) and not isinstance(exc, pa.ArrowException) and "Parquet" not in text:
            raise fail("E116", f"{path.name}: {exc}") from None
        raise fail("E132", f"{path.name}: {text.splitlines()[0] if text else type(exc).__name__}") from None


def _table_columns(path: Path, layout: Layout) -> list[str]:
    import pyarrow as pa

    try:
        if layout.format == "parquet":
            import pyarrow.parquet as pq

            return list(pq.ParquetFile(path).schema_arrow.names)
        batches = _table_batches(path, layout)
        first = next(batches, None)
        if first is None:
            raise fail("E130", f"{path.name} has no rows")
        return list(first.schema.names)
    except InputValidationError:
        raise
    except (pa.ArrowInvalid, OSError, ValueError) as exc:
        raise fail("E132", f"{path.name}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def _table_records(path: Path, layout: Layout, extra: list[str]) -> Iterator[tuple[int, str, str, dict[str, Any]]]:
    """(row, id, raw sequence, other columns) of every row."""
    columns = [layout.id_column, layout.sequence_column, *extra]
    row = 0
    for batch in _table_batches(path, layout, columns=[c for c in columns if c]):
        data = batch.to_pydict()
        ids, seqs = data[layout.id_column], data[layout.sequence_column]
        for i in range(batch.num_rows):
            seq = seqs[i]
            yield (
                row,
                "" if ids[i] is None else str(ids[i]),
                "" if seq is None else str(seq),
                {c: data[c][i] for c in extra},
            )
            row += 1


# --- the index ----------------------------------------------------------------------------------------------------


def index_dir() -> Path:
    return settings.get().seq_index_dir


def index_file(sha256: str) -> Path:
    return index_dir() / f"{sha256}.v{INDEX_VERSION}.npz"


def _save_index(path: Path, offsets: np.ndarray, lengths: np.ndarray, meta: dict[str, Any]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, offsets=offsets, lengths=lengths, meta=np.array(json.dumps(meta)))

    path.parent.mkdir(parents=True, exist_ok=True)
    write_with(path, write)


@dataclass(frozen=True)
class RecordIndex:
    offsets: np.ndarray  # FASTA: header byte offset (decompressed stream); tables: row number
    lengths: np.ndarray  # nucleotides per record, as in the file
    meta: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path) -> RecordIndex:
        with np.load(path) as data:
            return cls(data["offsets"], data["lengths"], json.loads(str(data["meta"])))


# --- validation ---------------------------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def alphabet_for(spec: ModelSpec) -> str:
    return ALPHABETS[spec.profile.modality]


def _foreign_letters_fix(bad: set[str], alphabet: str, model: str) -> str:
    """E135's fix for characters the model cannot read. Never a substitution that changes what the sequence says:
    U for a DNA model is the same sequence in the other alphabet; an ambiguity code has no faithful stand-in but N
    (any base), which keeps what is known, less precisely; gaps are not nucleotides; other letters are not a
    nucleotide sequence at all (a protein?), and no substitution makes them one."""
    other = sorted(bad - IUPAC_AMBIGUOUS - GAPS - {"U"})
    if other:  # not a nucleotide sequence (a protein's K, M, V are IUPAC letters too: no N for them either)
        return (f"{''.join(other)[:10]!r} are not nucleotide codes (a protein or other text?): {model} embeds "
                f"nucleotide sequences ({alphabet}); give the records' nucleotide sequence: no letter stands in for "
                "these")  # fmt: skip
    parts: list[str] = []
    if "U" in bad and "T" in alphabet:
        parts.append(f"U is an RNA letter and {model} reads DNA (its tokenizer has no U): embed RNA with an RNA model "
                     f"({RNA_FAMILIES}; they read T as U too), or give {model} the same sequence in DNA letters "
                     "(T for U, e.g. the cDNA)")  # fmt: skip
    ambiguous = sorted(bad & IUPAC_AMBIGUOUS)
    if ambiguous:
        parts.append(f"{', '.join(ambiguous)}: IUPAC ambiguity codes, which {model} does not read; N (any base) is "
                     "the only one it reads: N in their place keeps what is known, less precisely")  # fmt: skip
    if bad & GAPS:
        parts.append("'-' / '.' are alignment gaps, not nucleotides: give the unaligned sequence")
    return "; ".join(parts)


def read_as_note(summary: InputSummary) -> str | None:
    """One line saying which letters the model reads as others (None when there are none, or for cells)."""
    seq = summary.sequence
    if seq is None or not seq.read_as:
        return None
    letters = ", ".join(f"{a} as {b}" for a, b in seq.read_as.items())
    return (
        f"{seq.n_read_as:,} of {summary.n_cells:,} records in DNA letters: read {letters} "
        f"({seq.nucleotides_read_as:,} nucleotides), as helical's tokenizer reads them"
    )


def validate_sequences(
    path: str, spec: ModelSpec, options: Mapping[str, str], cache_dir: str | None = None, data_root: Path | None = None
) -> InputSummary:
    """Check every record of a sequence input (one streaming pass), cache its index, and summarise it."""
    file = Path(path)
    layout = layout_for(file, options)  # E139 before touching the file
    before = _stat_regular(file, data_root)
    if before.st_size == 0:
        raise fail("E130", f"{file.name} is empty (0 bytes)")
    alphabet = alphabet_for(spec)
    read_as = READ_AS.get(spec.profile.modality, {})
    allowed = frozenset(alphabet) | frozenset(read_as)
    context = int(spec.max_length or 0)
    too_long: TooLong = options.get("too_long", "error")  # type: ignore[assignment]
    extra: list[str] = []
    if layout.format != "fasta":
        names = _table_columns(file, layout)
        missing = [c for c in (layout.id_column, layout.sequence_column) if c not in names]
        if missing:
            raise fail("E133", f"{file.name} has no column {', '.join(map(repr, missing))} (its columns: "
                       f"{', '.join(names[:12])})")  # fmt: skip
        extra = [c for c in names if c not in (layout.id_column, layout.sequence_column)]
        records: Iterator[tuple[int, str, str, dict[str, Any]]] = _table_records(file, layout, extra)
    else:
        if not layout.compressed:
            with open(file, "rb") as fh:
                head = fh.read(1 << 16).lstrip()
            if head and not head.startswith(b">"):
                raise fail("E131", f"{file.name} does not start with a '>' header line: {head[:40]!r}")
        records = ((off, rid, seq, {}) for off, rid, seq in _fasta_records(file, layout.compressed))

    seen: set[str] = set()
    offsets: list[int] = []
    lengths: list[int] = []
    n_too_long = n_soft = n_read_as = nucleotides_read_as = 0
    found_read_as: set[str] = set()
    for number, (offset, rid, seq, _) in enumerate(records, 1):
        where = f"record {number} ({rid!r})" if rid else f"record {number}"
        if not rid:
            raise fail("E140", f"{where} of {file.name} has an empty id")
        if rid in seen:
            raise fail("E136", f"{where} of {file.name}: id {rid!r} appears twice")
        seen.add(rid)
        if not seq:
            raise fail("E134", f"{where} of {file.name}")
        upper = seq.upper()
        n_soft += upper != seq
        bad = set(upper) - allowed
        if bad:
            shown = "".join(sorted(bad))[:10]
            raise fail("E135", f"{where} of {file.name} has {shown!r}; {spec.name} reads {alphabet}",
                       _foreign_letters_fix(bad, alphabet, spec.name))  # fmt: skip
        if read_as:
            counts = {letter: upper.count(letter) for letter in read_as}
            if any(counts.values()):
                n_read_as += 1
                nucleotides_read_as += sum(counts.values())
                found_read_as.update(letter for letter, n in counts.items() if n)
        if context and len(seq) > context:
            if too_long == "error":
                raise fail("E137", f"{where} of {file.name} has {len(seq):,} nucleotides; {spec.name} reads at most "
                           f"{context:,}")  # fmt: skip
            n_too_long += 1
        offsets.append(offset)
        lengths.append(len(seq))
    if not offsets:
        raise fail("E130", f"{file.name} has no {'records' if layout.format == 'fasta' else 'rows'}")
    _check_unchanged(file, before)
    sha = sha256_file(file)
    idx = index_file(sha)
    meta = {"format": layout.format, "compressed": layout.compressed, "records": len(offsets), "sha256": sha}
    if not idx.is_file():
        _save_index(idx, np.asarray(offsets, dtype=np.int64), np.asarray(lengths, dtype=np.int64), meta)
    lens = np.asarray(lengths)
    summary = SequenceSummary(
        format=layout.format, compressed=layout.compressed, id_column=layout.id_column,
        sequence_column=layout.sequence_column, extra_columns=extra, alphabet=alphabet, context=context,
        too_long=too_long, n_too_long=n_too_long, n_soft_masked=int(n_soft), total_nucleotides=int(lens.sum()),
        read_as={letter: read_as[letter] for letter in sorted(found_read_as)}, n_read_as=n_read_as,
        nucleotides_read_as=nucleotides_read_as,
        min_length=int(lens.min()), max_length=int(lens.max()), index_file=str(idx),
    )  # fmt: skip
    return InputSummary(
        path=str(file.resolve()), sha256=sha, size_bytes=before.st_size, n_cells=len(offsets), n_genes=0,
        x_source=f"sequence:{layout.sequence_column or 'fasta'}", x_format="dense", dtype="str",
        gene_id_kind="symbol", genes_in_vocab=0, vocab_overlap=1.0, sequence=summary,
    )  # fmt: skip


def _stat_regular(file: Path, data_root: Path | None) -> os.stat_result:
    try:
        before = file.stat()
    except FileNotFoundError:
        raise fail("E101", str(file), _not_found_hint(data_root)) from None
    except OSError as exc:
        raise fail("E116", f"{file}: {exc.strerror}") from exc
    _check_kind(file, before.st_mode)
    if not os.access(file, os.R_OK):
        raise fail("E116", f"{file}: permission denied")
    return before


# --- reading shards -----------------------------------------------------------------------------------------------


def _index_for(summary: InputSummary) -> RecordIndex:
    """The cached index of a validated input; rebuilt (same file, same offsets) where the cache lacks it."""
    seq = summary.sequence
    assert seq is not None
    for candidate in (Path(seq.index_file), index_file(summary.sha256)):
        if candidate.is_file():
            return RecordIndex.load(candidate)
    file = Path(summary.path)
    layout = Layout(seq.format, seq.compressed, seq.id_column, seq.sequence_column)
    if layout.format == "fasta":
        rows = [(off, len(s)) for off, _, s in _fasta_records(file, layout.compressed)]
    else:
        rows = [(row, len(s)) for row, _, s, _ in _table_records(file, layout, [])]
    offsets, lengths = (np.asarray(col, dtype=np.int64) for col in zip(*rows, strict=True))
    meta = {"format": layout.format, "compressed": layout.compressed, "records": len(rows), "sha256": summary.sha256}
    _save_index(index_file(summary.sha256), offsets, lengths, meta)
    return RecordIndex(offsets, lengths, meta)


def read_records(summary: InputSummary, start: int, stop: int) -> list[Record]:
    """Records [start, stop) of a validated sequence input, upper-cased, in the model's letters (T as U for an RNA
    model given DNA letters: READ_AS, as validation found it), without reading the rest of the file."""
    seq = summary.sequence
    assert seq is not None
    records = _file_records(summary, start, stop)
    if not seq.read_as:
        return records
    letters = str.maketrans(seq.read_as)
    return [Record(r.id, r.sequence.translate(letters), r.extra) for r in records]


def _file_records(summary: InputSummary, start: int, stop: int) -> list[Record]:
    """Records [start, stop) as the file writes them, upper-cased."""
    seq = summary.sequence
    assert seq is not None
    file = Path(summary.path)
    layout = Layout(seq.format, seq.compressed, seq.id_column, seq.sequence_column)
    if layout.format == "fasta":
        index = _index_for(summary)
        offset = int(index.offsets[start])
        return [Record(rid, s.upper()) for _, rid, s in _fasta_records(file, layout.compressed, offset, stop - start)]
    if layout.format == "parquet":
        return _parquet_records(file, layout, seq.extra_columns, start, stop)
    out: list[Record] = []
    for row, rid, s, extra in _table_records(file, layout, seq.extra_columns):  # streamed CSV blocks
        if row >= stop:
            break
        if row >= start:
            out.append(Record(rid, s.upper(), extra))
    return out


def longest_record(summary: InputSummary) -> int:
    """The longest record of a validated input, in nucleotides (from the index)."""
    return int(_index_for(summary).lengths.max(initial=0))


def nucleotides(summary: InputSummary, start: int, stop: int) -> int:
    """Nucleotides in records [start, stop), from the index (telemetry's nucleotides per second)."""
    return int(_index_for(summary).lengths[start:stop].sum())


def _parquet_records(file: Path, layout: Layout, extra: list[str], start: int, stop: int) -> list[Record]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(file)
    columns = [layout.id_column, layout.sequence_column, *extra]
    out: list[Record] = []
    first = 0
    for group in range(pf.num_row_groups):
        rows = pf.metadata.row_group(group).num_rows
        if first + rows > start and first < stop:
            data = pf.read_row_group(group, columns=columns).to_pydict()
            for i in range(max(start - first, 0), min(stop - first, rows)):
                out.append(Record(str(data[layout.id_column][i]), str(data[layout.sequence_column][i]).upper(),
                                  {c: data[c][i] for c in extra}))  # fmt: skip
        first += rows
        if first >= stop:
            break
    return out


def read_obs(summary: InputSummary) -> pd.DataFrame:
    """One row per record, in input order: id (the index), length, and the table's other columns."""
    seq = summary.sequence
    assert seq is not None
    index = _index_for(summary)
    obs = pd.DataFrame({"id": [], "length": []})
    if seq.format == "fasta":
        ids = [rid for _, rid, _ in _fasta_records(Path(summary.path), seq.compressed)]
        obs = pd.DataFrame({"id": ids, "length": index.lengths.astype(np.int64)})
    else:
        layout = Layout(seq.format, seq.compressed, seq.id_column, seq.sequence_column)
        columns = [c for c in [seq.id_column, *seq.extra_columns] if c]
        frames = [b.to_pandas() for b in _table_batches(Path(summary.path), layout, columns=columns)]
        table = pd.concat(frames, ignore_index=True)[columns]
        table = table.rename(columns={seq.id_column: "id"})
        table.insert(1, "length", index.lengths.astype(np.int64))
        obs = table
    obs["id"] = obs["id"].astype(str)
    obs.index = pd.Index(obs["id"].to_numpy(), name=None)
    return obs


# --- what the model sees ------------------------------------------------------------------------------------------


def pieces(sequence: str, context: int, too_long: TooLong) -> list[str]:
    """The parts of one record the model embeds: itself, its first `context` nucleotides (truncate), or
    consecutive windows of `context` (window; the record's embedding is their mean)."""
    if not context or len(sequence) <= context or too_long == "error":
        return [sequence]
    if too_long == "truncate":
        return [sequence[:context]]
    return [sequence[i : i + context] for i in range(0, len(sequence), context)]
