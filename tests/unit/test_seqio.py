"""Sequence inputs (seqio.py): every malformed file ends in its code with nothing written and the input untouched;
records read by range equal the file's; the four formats give the same records."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helical_airflow import seqio
from helical_airflow.errors import InputValidationError
from helical_airflow.models import get_model
from helical_airflow.validate import validate_input

GOOD = ">r1 first\nACGTacgtNN\nACGT\n>r2\nGGGCCC\n>r3\n" + "ACGT" * 6 + "\n"
MANY = "".join(f">m{i}\n{'ACGT' * 20}\n" for i in range(200))


@pytest.fixture(autouse=True)
def index_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "index"
    monkeypatch.setenv("HELICAL_AIRFLOW_SEQ_INDEX_DIR", str(folder))
    return folder


def _write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def _gz(text: str) -> bytes:
    return gzip.compress(text.encode(), mtime=0)


def _parquet(path: Path, rows: dict[str, list[str]], row_group_size: int = 2) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(rows), path, row_group_size=row_group_size)
    return path


CORPUS: list[tuple[str, bytes | str, dict[str, str], str]] = [
    ("empty.fa", b"", {}, "E130"),
    ("blank.fa", "\n\n  \n", {}, "E130"),
    ("text.fa", "hello world\nACGT\n", {}, "E131"),
    ("binary.fasta", b"\x89HDF\r\n\x1a\n\x00\x00", {}, "E131"),
    ("noid.fa", ">\nACGT\n", {}, "E140"),
    ("emptyseq.fa", ">a\n>b\nACGT\n", {}, "E134"),
    ("protein.fa", ">a\nMKVLAAGIVG\n", {}, "E135"),
    ("rna_for_dna.fa", ">a\nACGU\n", {}, "E135"),
    ("dup.fa", ">a\nACGT\n>a x\nACGA\n", {}, "E136"),
    ("long.fa", ">a\n" + "A" * 1025 + "\n", {}, "E137"),
    ("truncated.fa.gz", _gz(MANY)[:-30], {}, "E138"),
    ("notgzip.fa.gz", GOOD, {}, "E138"),
    ("wrong.txt", GOOD, {}, "E139"),
    ("wrong.csv.gz", GOOD, {}, "E139"),
    ("nocol.csv", "name,seq\na,ACGT\n", {}, "E133"),
    ("othercol.csv", "id,sequence\na,ACGT\n", {"sequence_column": "dna"}, "E133"),
    ("noheader.csv", "", {}, "E130"),
    ("header_only.csv", "id,sequence\n", {}, "E130"),
    ("ragged.csv", "id,sequence\na,ACGT,extra\n", {}, "E132"),
    ("emptyseq.tsv", "id\tsequence\na\t\n", {}, "E134"),
    ("dup.tsv", "id\tsequence\na\tACGT\na\tACGA\n", {}, "E136"),
    ("bad.parquet", b"PAR1 not really", {}, "E132"),
    ("noid.csv", "id,sequence\n,ACGT\n", {}, "E140"),
]


@pytest.mark.parametrize(("name", "data", "options", "code"), CORPUS, ids=[c[0] for c in CORPUS])
def test_malformed_input_ends_in_its_code_and_writes_nothing(
    tmp_path: Path, index_dir: Path, name: str, data: bytes | str, options: dict[str, str], code: str
) -> None:
    path = _write(tmp_path / name, data)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(InputValidationError) as caught:
        validate_input(str(path), "hyena_dna", options=options)
    assert caught.value.code == code, caught.value.render()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert not index_dir.exists() or not any(index_dir.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, *(["index"] if index_dir.exists() else [])])


def test_parquet_missing_column(tmp_path: Path) -> None:
    path = _parquet(tmp_path / "t.parquet", {"name": ["a"], "sequence": ["ACGT"]})
    with pytest.raises(InputValidationError) as caught:
        validate_input(str(path), "hyena_dna")
    assert caught.value.code == "E133"


def test_missing_file_is_e101(tmp_path: Path) -> None:
    with pytest.raises(InputValidationError) as caught:
        validate_input(str(tmp_path / "nope.fa"), "hyena_dna")
    assert caught.value.code == "E101"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=300), suffix=st.sampled_from([".fa", ".fa.gz", ".csv", ".tsv", ".parquet"]))
def test_any_bytes_end_valid_or_in_a_sequence_code(tmp_path: Path, body: bytes, suffix: str) -> None:
    path = tmp_path / f"h{suffix}"
    path.write_bytes(body)
    try:
        summary = validate_input(str(path), "hyena_dna")
    except InputValidationError as exc:
        assert exc.code in {"E130", "E131", "E132", "E133", "E134", "E135", "E136", "E137", "E138", "E140"}, (
            exc.render()
        )
    else:
        assert summary.n_cells >= 1 and summary.sequence is not None


def _same_records(tmp_path: Path) -> list[Path]:
    ids = [f"s{i}" for i in range(7)]
    seqs = ["ACGT" * (i + 1) + "n" * i for i in range(7)]
    fasta = "".join(f">{i} note\n{s[:5]}\n{s[5:]}\n" for i, s in zip(ids, seqs, strict=True))
    csv = "id,sequence,label\n" + "".join(f"{i},{s},L{n % 2}\n" for n, (i, s) in enumerate(zip(ids, seqs, strict=True)))
    return [
        _write(tmp_path / "r.fa", fasta),
        _write(tmp_path / "r.fa.gz", _gz(fasta)),
        _write(tmp_path / "r.csv", csv),
        _write(tmp_path / "r.tsv", csv.replace(",", "\t")),
        _parquet(tmp_path / "r.parquet", {"id": ids, "sequence": seqs, "label": [f"L{n % 2}" for n in range(7)]}),
    ]


def test_every_format_gives_the_same_records_by_range(tmp_path: Path) -> None:
    expected = None
    for path in _same_records(tmp_path):
        summary = validate_input(str(path), "hyena_dna")
        assert summary.n_cells == 7 and Path(summary.sequence.index_file).is_file()  # type: ignore[union-attr]
        whole = [(r.id, r.sequence) for r in seqio.read_records(summary, 0, 7)]
        pieces = [(r.id, r.sequence) for a in range(0, 7, 3) for r in seqio.read_records(summary, a, min(a + 3, 7))]
        assert whole == pieces, path.name
        assert all(s == s.upper() for _, s in whole)
        assert list(seqio.read_obs(summary)["id"]) == [i for i, _ in whole]
        expected = expected or whole
        assert whole == expected, path.name
    assert seqio.read_obs(validate_input(str(tmp_path / "r.csv"), "hyena_dna"))["label"].tolist()[:2] == ["L0", "L1"]


def test_too_long_policies(tmp_path: Path) -> None:
    path = _write(tmp_path / "l.fa", ">a\n" + "A" * 2500 + "\n>b\nACGT\n")
    summary = validate_input(str(path), "hyena_dna", options={"too_long": "window"})
    assert summary.sequence is not None and summary.sequence.n_too_long == 1 and summary.sequence.too_long == "window"
    assert [len(p) for p in seqio.pieces("A" * 2500, 1024, "window")] == [1024, 1024, 452]
    assert seqio.pieces("A" * 2500, 1024, "truncate") == ["A" * 1024]
    with pytest.raises(Exception) as caught:
        validate_input(str(path), "hyena_dna", options={"too_long": "drop"})
    assert getattr(caught.value, "code", None) == "E227"


def test_cuda_only_families_fail_on_cpu_before_loading() -> None:
    from helical_airflow.errors import ConfigError
    from helical_airflow.models import registry

    for name in ("caduceus", "evo_2", "evo2-7b"):
        spec = get_model(name)
        assert spec.profile.queue == "gpu" and spec.is_sequence
        with pytest.raises(ConfigError) as caught:
            registry.check_runnable(spec, "cpu", "helical")
        assert caught.value.code == "E228" and ".py:" in caught.value.message


def test_dag_params_become_the_sequence_models_options_only() -> None:
    from helical_airflow.airflow_tasks import run_params

    seq = run_params({"model": "hyena_dna", "too_long": "window", "sequence_column": "seq", "id_column": None})
    assert seq.options == {"too_long": "window", "sequence_column": "seq"}
    assert run_params({"model": "geneformer", "too_long": "window"}).options == {}  # no E227 for a single-cell run


def test_helical_reads_t_as_u_but_its_process_data_refuses_t() -> None:
    """Why RNA models accept DNA letters and why the reader writes U for T (seqio.READ_AS): both of helical's RNA
    tokenizers give T the id of U; helical's process_data check (ACUGNE) stops a T before the tokenizer sees it. The
    DNA tokenizers have no U: it would be [UNK], so a U stays E135 for a DNA model."""
    from helical.models.base_models import HelicalRNAModel
    from helical.models.helix_mrna.helix_mrna_tokenizer import CharTokenizer as HelixTokenizer
    from helical.models.hyena_dna.standalone_hyenadna import CharacterTokenizer
    from helical.models.mamba2_mrna.mamba2_mrna_tokenizer import CharTokenizer as Mamba2Tokenizer

    for tokenizer in (HelixTokenizer(model_max_length=64), Mamba2Tokenizer(model_max_length=64)):
        assert tokenizer("ACGTTN")["input_ids"] == tokenizer("ACGUUN")["input_ids"]
        assert tokenizer.convert_tokens_to_ids("T") == tokenizer.convert_tokens_to_ids("U") != tokenizer.unk_token_id
    with pytest.raises(ValueError, match="Invalid RNA sequence"):
        HelicalRNAModel.get_valid_rna_sequence(None, ["ACGT"])  # type: ignore[arg-type]
    dna = CharacterTokenizer(characters=["A", "C", "G", "T", "N"], model_max_length=64)
    assert dna.convert_tokens_to_ids("U") == dna.unk_token_id != dna.convert_tokens_to_ids("T")


@pytest.mark.parametrize("fmt", [".fa", ".csv"])
def test_an_rna_model_reads_dna_letters_as_their_u_twin(tmp_path: Path, fmt: str) -> None:
    seqs = {"a": "ACGTtgcaNN", "b": "GGGCCCAAA", "c": "TTTT"}  # 6 T (soft-masked t too) in 2 records; b has none

    def write(name: str, rows: dict[str, str]) -> Path:
        if fmt == ".fa":
            return _write(tmp_path / f"{name}{fmt}", "".join(f">{k}\n{v}\n" for k, v in rows.items()))
        return _write(tmp_path / f"{name}{fmt}", "id,sequence\n" + "".join(f"{k},{v}\n" for k, v in rows.items()))

    dna = validate_input(str(write("dna", seqs)), "helix_mrna")
    twin = validate_input(str(write("rna", {k: v.replace("T", "U").replace("t", "u") for k, v in seqs.items()})),
                          "helix_mrna")  # fmt: skip
    assert dna.sequence is not None and twin.sequence is not None
    assert (dna.sequence.read_as, dna.sequence.n_read_as, dna.sequence.nucleotides_read_as) == ({"T": "U"}, 2, 6)
    assert (twin.sequence.read_as, twin.sequence.n_read_as, twin.sequence.nucleotides_read_as) == ({}, 0, 0)
    assert dna.sequence.alphabet == twin.sequence.alphabet == "ACGUN"
    assert [(r.id, r.sequence) for r in seqio.read_records(dna, 0, 3)] == [
        (r.id, r.sequence) for r in seqio.read_records(twin, 0, 3)
    ] == [("a", "ACGUUGCANN"), ("b", "GGGCCCAAA"), ("c", "UUUU")]
    assert seqio.read_as_note(dna) == (
        "2 of 3 records in DNA letters: read T as U (6 nucleotides), as helical's tokenizer reads them"
    )
    assert seqio.read_as_note(twin) is None
    # a DNA model reads DNA letters as they are
    assert validate_input(str(tmp_path / f"dna{fmt}"), "hyena_dna").sequence.read_as == {}  # type: ignore[union-attr]


#: (model, sequence, words the fix must say): no fix may ask for a substitution that changes the sequence
E135_FIXES = [
    ("hyena_dna", "ACGU", ["RNA model", "helix_mrna", "T for U"]),
    ("hyena_dna", "ACGRYN", ["R, Y: IUPAC ambiguity codes", "N (any base)"]),
    ("helix_mrna", "ACGRN", ["R: IUPAC ambiguity codes"]),
    ("hyena_dna", "ACG-T", ["alignment gaps", "unaligned sequence"]),
    ("helix_mrna", "MKVLAAGIVG", ["'IL' are not nucleotide codes", "protein", "no letter stands in"]),
    ("hyena_dna", "ACGTX*", ["'*X' are not nucleotide codes"]),
]


@pytest.mark.parametrize(("model", "sequence", "words"), E135_FIXES, ids=[f"{m}-{s}" for m, s, _ in E135_FIXES])
def test_e135_fixes_name_the_problem_and_never_ask_to_replace_letters(
    tmp_path: Path, model: str, sequence: str, words: list[str]
) -> None:
    path = _write(tmp_path / "x.fa", f">x\n{sequence}\n")
    with pytest.raises(InputValidationError) as caught:
        validate_input(str(path), model)
    assert caught.value.code == "E135", caught.value.render()
    for word in words:
        assert word in caught.value.hint, caught.value.hint
    assert "replace" not in caught.value.hint and "e.g. with N" not in caught.value.hint
    if "not nucleotide codes" in caught.value.hint:  # not nucleotides at all: no N for its IUPAC-looking letters
        assert "N (any base)" not in caught.value.hint
