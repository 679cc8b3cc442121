"""A hostile-input corpus, built here from a tiny slice of the sample, and a property test of the reader.

Every file goes the DAG's way in (a path inside the data folder -> `resolve_input` -> `validate_input`)
and must end in its coded error within its time bound: never a crash, a hang, or anything written,
and the file itself left byte-identical (except the one that grows on purpose).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helical_airflow import h5io
from helical_airflow.airflow_tasks import resolve_input
from helical_airflow.errors import HelicalAirflowError
from helical_airflow.validate import CODES, validate_input

MODEL = "geneformer"
#: the bound for every file here: the deadline for a file this small is VALIDATE_BASE_S (6 s), plus the child's start-up
BOUND_S = 10.0
CELLS = 60


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, sample_h5ad: Path) -> Path:
    """The first 60 cells of the sample (all 765 genes, int32 CSR counts): a valid input, ~100 KB."""
    path = tmp_path_factory.mktemp("hostile_base") / "base.h5ad"
    ad.read_h5ad(sample_h5ad)[:CELLS].copy().write_h5ad(path)
    return path


def _tree(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink() or not p.exists():
            out[str(p)] = f"link:{os.readlink(p)}" if p.is_symlink() else "?"
        elif p.is_file():
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[str(p)] = "folder" if p.is_dir() else "special"
    return out


def _check(data: Path, rel: str, cache: str) -> tuple[str | None, float, str]:
    """(code or None when valid, seconds, rendered error) for data-folder path `rel`, the DAG's way."""
    started = time.monotonic()
    try:
        validate_input(str(resolve_input(rel)), MODEL, cache_dir=cache, data_root=data)
    except HelicalAirflowError as exc:
        return exc.code, time.monotonic() - started, exc.render()
    return None, time.monotonic() - started, ""


# ---- builders: each writes one hostile input into the data folder `d` and returns its path relative to it ----
Builder = Callable[[Path, Path], str]


def _copy(d: Path, base: Path, name: str = "copy.h5ad") -> Path:
    return Path(shutil.copy(base, d / name))


def _truncated(fraction: float) -> Builder:
    def build(d: Path, base: Path) -> str:
        blob = base.read_bytes()
        (d / "cut.h5ad").write_bytes(blob[: int(len(blob) * fraction)])
        return "cut.h5ad"

    return build


def _flipped(where: Callable[[Path], int], bits: int = 0xFF) -> Builder:
    """The file with the byte at `where(base)` XOR `bits`."""

    def build(d: Path, base: Path) -> str:
        blob = bytearray(base.read_bytes())
        blob[where(base)] ^= bits
        (d / "flip.h5ad").write_bytes(bytes(blob))
        return "flip.h5ad"

    return build


def _offset_of(dataset: str, plus: int = 0) -> Callable[[Path], int]:
    """Byte offset of a dataset's raw data (its first chunk when chunked) in the file, plus `plus`."""

    def where(base: Path) -> int:
        with h5py.File(base, "r") as h5:
            dset = h5[dataset]
            offset = dset.id.get_offset() if dset.chunks is None else dset.id.get_chunk_info(0).byte_offset
        assert offset is not None, f"{dataset} has no data on disk"
        return int(offset) + plus

    return where


def _edit(change: Callable[[h5py.File], None]) -> Builder:
    def build(d: Path, base: Path) -> str:
        path = _copy(d, base)
        with h5py.File(path, "a") as h5:
            change(h5)
        return path.name

    return build


def _set_x(values: Callable[[np.ndarray], np.ndarray], dtype: object = None) -> Callable[[h5py.File], None]:
    def change(h5: h5py.File) -> None:
        data = values(h5["X/data"][:].astype(dtype or h5["X/data"].dtype))
        del h5["X/data"]
        h5["X"].create_dataset("data", data=data)

    return change


def _at(i: int, value: float) -> Callable[[np.ndarray], np.ndarray]:
    def set_value(x: np.ndarray) -> np.ndarray:
        x[i] = value
        return x

    return set_value


def _replace(name: str, make: Callable[[h5py.Group, str], None]) -> Callable[[h5py.File], None]:
    def change(h5: h5py.File) -> None:
        parent, _, leaf = name.rpartition("/")
        del h5[name]
        make(h5[parent or "/"], leaf)

    return change


def _write(build: Callable[[ad.AnnData], ad.AnnData]) -> Builder:
    def write(d: Path, base: Path) -> str:
        build(ad.read_h5ad(base)).write_h5ad(d / "made.h5ad")
        return "made.h5ad"

    return write


def _rename_cells(adata: ad.AnnData) -> ad.AnnData:
    names = list(adata.obs_names)
    names[7] = names[2]
    adata.obs_names = names
    return adata


def _rename_genes(adata: ad.AnnData) -> ad.AnnData:
    names = list(adata.var_names)
    names[9] = names[1]
    adata.var_names = names
    return adata


def _unsorted_rows(adata: ad.AnnData) -> ad.AnnData:
    x = adata.X.tocsr()
    for row in range(x.shape[0]):  # reverse each row's column order: still a valid (non-canonical) CSR
        lo, hi = x.indptr[row], x.indptr[row + 1]
        x.indices[lo:hi] = x.indices[lo:hi][::-1].copy()
        x.data[lo:hi] = x.data[lo:hi][::-1].copy()
    x.has_sorted_indices = False
    adata.X = x
    return adata


def _outside_symlink(d: Path, base: Path) -> str:
    outside = d.parent / "outside"
    outside.mkdir(exist_ok=True)
    _copy(outside, base, "secret.h5ad")
    (d / "link.h5ad").symlink_to(outside / "secret.h5ad")
    return "link.h5ad"


def _outside_dir_symlink(d: Path, base: Path) -> str:
    outside = d.parent / "outside_dir"
    outside.mkdir(exist_ok=True)
    _copy(outside, base, "x.h5ad")
    (d / "sub").symlink_to(outside, target_is_directory=True)
    return "sub/x.h5ad"


def _dotdot(d: Path, base: Path) -> str:
    _copy(d.parent, base, "above.h5ad")
    return "../above.h5ad"


def _absolute_outside(d: Path, base: Path) -> str:
    return "/etc/hostname.h5ad"


def _symlink_loop(d: Path, base: Path) -> str:
    (d / "a.h5ad").symlink_to(d / "b.h5ad")
    (d / "b.h5ad").symlink_to(d / "a.h5ad")
    return "a.h5ad"


def _non_utf8_name(d: Path, base: Path) -> str:
    name = os.fsdecode(b"caf\xe9-\xff.h5ad")  # Latin-1 bytes: not UTF-8
    shutil.copy(base, d / name)
    return name


def _fifo(d: Path, base: Path) -> str:
    os.mkfifo(d / "pipe.h5ad")  # opening it for reading would block until a writer came
    return "pipe.h5ad"


def _unix_socket(d: Path, base: Path) -> str:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(d / "sock.h5ad"))
    sock.close()
    return "sock.h5ad"


def _not_hdf5(d: Path, base: Path) -> str:
    (d / "text.h5ad").write_text("gene,cell\nCD3E,1\n")
    return "text.h5ad"


def _signature_only(d: Path, base: Path) -> str:
    (d / "sig.h5ad").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 4096)
    return "sig.h5ad"


def _random_after_signature(d: Path, base: Path) -> str:
    blob = bytearray(base.read_bytes())
    blob[8:] = np.random.default_rng(7).integers(0, 256, len(blob) - 8, dtype=np.uint8).tobytes()
    (d / "noise.h5ad").write_bytes(bytes(blob))
    return "noise.h5ad"


def _empty(d: Path, base: Path) -> str:
    (d / "empty.h5ad").touch()
    return "empty.h5ad"


def _dense_huge(h5: h5py.File) -> None:
    del h5["X"]
    h5.create_dataset("X", shape=(10**7, 10**6), dtype="float32")  # 40 TB declared, nothing stored


def _data_huge(g: h5py.Group, name: str) -> None:
    g.create_dataset(name, shape=(10**12,), dtype="float32")


def _data_huge_compressed(g: h5py.Group, name: str) -> None:
    g.create_dataset(name, shape=(10**10,), dtype="int32", chunks=(2**20,), compression="gzip")


def _obs_column_huge(h5: h5py.File) -> None:
    h5["obs"].create_dataset("ghost", shape=(10**11,), dtype="int64")


def _external_link(h5: h5py.File) -> None:
    h5["elsewhere"] = h5py.ExternalLink("/etc/passwd", "/")


def _external_storage(h5: h5py.File) -> None:
    h5["obs"].create_dataset("raw", shape=(CELLS,), dtype="int64", external=[("/dev/zero", 0, CELLS * 8)])


def _shape_attr(shape: tuple[int, int]) -> Callable[[h5py.File], None]:
    def change(h5: h5py.File) -> None:
        h5["X"].attrs["shape"] = np.array(shape, dtype=np.int64)

    return change


def _indptr_edit(change: Callable[[np.ndarray], None]) -> Callable[[h5py.File], None]:
    def edit(h5: h5py.File) -> None:
        indptr = h5["X/indptr"][:]
        change(indptr)
        h5["X/indptr"][:] = indptr

    return edit


def _decrease(indptr: np.ndarray) -> None:
    indptr[30] = indptr[32] + 1


def _start_at_one(indptr: np.ndarray) -> None:
    indptr[0] = 1


def _end_short(indptr: np.ndarray) -> None:
    indptr[-1] -= 3


def _index(i: int, value: int) -> Callable[[h5py.File], None]:
    def change(h5: h5py.File) -> None:
        h5["X/indices"][i] = value

    return change


def _x_strings(h5: h5py.File) -> None:
    n = h5["X/data"].shape[0]
    del h5["X/data"]
    h5["X"].create_dataset("data", data=np.array([b"7"] * n, dtype="S1"))


def _x_compound(h5: h5py.File) -> None:
    n = h5["X/data"].shape[0]
    del h5["X/data"]
    h5["X"].create_dataset("data", shape=(n,), dtype=np.dtype([("a", "i4"), ("b", "f4")]))
    h5["X/data"][:] = np.zeros(n, dtype=np.dtype([("a", "i4"), ("b", "f4")]))


def _x_bool(h5: h5py.File) -> None:
    _set_x(lambda x: x > 0, bool)(h5)


def _x_complex(h5: h5py.File) -> None:
    _set_x(lambda x: x + 0j, np.complex64)(h5)


def _x_3d(h5: h5py.File) -> None:
    del h5["X"]
    h5.create_dataset("X", data=np.zeros((2, 2, 2), dtype="int32"))


def _no_x(h5: h5py.File) -> None:
    del h5["X"]


def _obs_short(h5: h5py.File) -> None:
    name = f"obs/{h5['obs'].attrs['_index']}"
    index = h5[name][:-1]
    del h5[name]
    h5.create_dataset(name, data=index)


#: (id, builder, expected code; None = a valid input that must pass)
CORPUS: list[tuple[str, Builder, str | None]] = [
    *[(f"truncated-{f:g}", _truncated(f), "E103") for f in (0.01, 0.1, 0.3, 0.5, 0.75, 0.9, 0.99)],
    ("flip-superblock-version", _flipped(lambda b: 8), "E103"),
    ("flip-superblock-eof-address", _flipped(lambda b: 40, 0x10), "E103"),
    ("flip-root-header", _flipped(lambda b: 96), "E103"),
    ("flip-root-btree", _flipped(lambda b: 136), "E103"),
    ("flip-indptr-high-byte", _flipped(_offset_of("X/indptr", 8 * 20 + 3), 0x40), "E114"),
    ("flip-indices-high-byte", _flipped(_offset_of("X/indices", 4 * 50 + 3), 0x7F), "E114"),
    ("flip-data-sign-bit", _flipped(_offset_of("X/data", 4 * 10 + 3), 0x80), "E109"),
    ("random-after-signature", _random_after_signature, "E103"),
    ("signature-only", _signature_only, "E103"),
    ("empty", _empty, "E102"),
    ("not-hdf5", _not_hdf5, "E102"),
    ("x-strings", _edit(_x_strings), "E105"),
    ("x-compound", _edit(_x_compound), "E105"),
    ("x-bool", _edit(_x_bool), "E108"),
    ("x-complex", _edit(_x_complex), "E108"),
    ("x-3d", _edit(_x_3d), "E105"),
    ("no-x", _edit(_no_x), "E104"),
    ("dense-x-huge-declared", _edit(_dense_huge), "E117"),
    ("csr-data-huge-declared", _edit(_replace("X/data", _data_huge)), "E117"),
    ("csr-data-huge-compressed", _edit(_replace("X/data", _data_huge_compressed)), "E117"),
    ("obs-column-huge-declared", _edit(_obs_column_huge), "E117"),
    ("shape-attr-huge", _edit(_shape_attr((10**12, 765))), "E114"),
    ("shape-attr-negative", _edit(_shape_attr((-5, 765))), "E114"),
    ("indices-out-of-range", _edit(_index(50, 10_000)), "E114"),
    ("indices-negative", _edit(_index(50, -1)), "E114"),
    ("indptr-decreasing", _edit(_indptr_edit(_decrease)), "E114"),
    ("indptr-not-from-zero", _edit(_indptr_edit(_start_at_one)), "E114"),
    ("indptr-ends-short", _edit(_indptr_edit(_end_short)), "E114"),
    ("indices-unsorted-in-rows", _write(_unsorted_rows), None),  # valid (scipy's non-canonical CSR): accepted
    ("nan", _edit(_set_x(_at(5, np.nan), np.float32)), "E110"),
    ("inf", _edit(_set_x(_at(5, np.inf), np.float32)), "E110"),
    ("minus-inf", _edit(_set_x(_at(5, -np.inf), np.float64)), "E110"),
    ("negative-count", _edit(_set_x(_at(5, -3))), "E109"),
    ("non-integer-count", _edit(_set_x(_at(5, 1.5), np.float32)), "E108"),
    ("zero-cells", _write(lambda a: a[:0].copy()), "E106"),
    ("zero-genes", _write(lambda a: a[:, :0].copy()), "E107"),
    ("duplicate-genes", _write(_rename_genes), "E111"),
    ("duplicate-cells", _write(_rename_cells), "E121"),
    ("obs-shorter-than-x", _edit(_obs_short), "E115"),
    ("external-link", _edit(_external_link), "E124"),
    ("external-storage", _edit(_external_storage), "E124"),
    ("symlink-leaving-data", _outside_symlink, "E513"),
    ("dir-symlink-leaving-data", _outside_dir_symlink, "E513"),
    ("dotdot", _dotdot, "E513"),
    ("absolute-outside", _absolute_outside, "E513"),
    ("symlink-loop", _symlink_loop, "E101"),
    ("missing", lambda d, b: "nope.h5ad", "E101"),
    ("directory", lambda d, b: (d / "dir.h5ad").mkdir() or "dir.h5ad", "E101"),
    ("non-utf8-name", _non_utf8_name, "E120"),
    ("fifo", _fifo, "E118"),
    ("unix-socket", _unix_socket, "E118"),
]


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The DAG's data folder (tmp/data), with the cwd elsewhere so a stray write would show in the tree."""
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("HELICAL_AIRFLOW_DATA_DIR", str(data))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(h5io, "BLOCK_ELEMENTS", 1000)  # several blocks even for this small matrix
    yield data


def test_the_corpus_is_large_enough_and_covers_every_new_code() -> None:
    assert len(CORPUS) >= 30
    assert {"E117", "E118", "E120", "E121", "E124"} <= {code for _, _, code in CORPUS}


@pytest.mark.parametrize("build,expected", [c[1:] for c in CORPUS], ids=[c[0] for c in CORPUS])
def test_hostile_input_ends_in_its_code_in_time_and_is_untouched(
    build: Builder, expected: str | None, base: Path, data_dir: Path, fixture_cache: str
) -> None:
    rel = build(data_dir, base)
    before = _tree(data_dir.parent)
    code, seconds, rendered = _check(data_dir, rel, fixture_cache)
    assert code == expected, rendered
    assert seconds < BOUND_S
    if code:
        assert code in CODES or code == "E513"
        assert "fix:" in rendered
    assert _tree(data_dir.parent) == before  # nothing written, the input byte-identical


def test_e101_in_the_dag_points_at_the_data_folder(data_dir: Path, fixture_cache: str) -> None:
    code, _, rendered = _check(data_dir, "missing.h5ad", fixture_cache)
    assert code == "E101" and str(data_dir) in rendered and "current directory" not in rendered


def test_a_file_that_grows_while_read_is_refused(base: Path, data_dir: Path, fixture_cache: str) -> None:
    path = _copy(data_dir, base, "growing.h5ad")
    stop = threading.Event()

    def grow() -> None:
        with open(path, "ab") as fh:
            while not stop.is_set():
                fh.write(b"\0" * 64)
                fh.flush()
                time.sleep(0.005)

    writer = threading.Thread(target=grow)
    writer.start()
    try:
        code, seconds, rendered = _check(data_dir, "growing.h5ad", fixture_cache)
    finally:
        stop.set()
        writer.join()
    assert code == "E119", rendered
    assert seconds < BOUND_S


def test_slow_inspection_hits_the_deadline(
    sample_h5ad: Path, data_dir: Path, fixture_cache: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One value per read: the sample's inspection then takes far longer than its (lowered) deadline -> E122."""
    _copy(data_dir, sample_h5ad, "slow.h5ad")
    monkeypatch.setattr(h5io, "BLOCK_ELEMENTS", 1)
    monkeypatch.setenv("HELICAL_AIRFLOW_VALIDATE_TIMEOUT_S", "0.5")
    code, seconds, rendered = _check(data_dir, "slow.h5ad", fixture_cache)
    assert code == "E122", rendered
    assert seconds < 3


def test_memory_budget_is_enforced(
    base: Path, data_dir: Path, fixture_cache: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dense 16000 x 765 int64 X (98 MB, gzip: ~4 MB on disk) read in one block under a 16 MB budget -> E123."""
    adata = ad.read_h5ad(base)
    counts = np.random.default_rng(0).poisson(1.0, (16_000, adata.n_vars)).astype(np.int64)
    big = ad.AnnData(X=counts, var=adata.var)
    big.obs_names = [f"c{i}" for i in range(big.n_obs)]
    big.write_h5ad(data_dir / "dense.h5ad", compression="gzip")
    monkeypatch.setattr(h5io, "BLOCK_ELEMENTS", 2**24)
    monkeypatch.setenv("HELICAL_AIRFLOW_VALIDATE_MEMORY_MB", "16")
    code, _, rendered = _check(data_dir, "dense.h5ad", fixture_cache)
    assert code == "E123", rendered
    monkeypatch.delenv("HELICAL_AIRFLOW_VALIDATE_MEMORY_MB")
    code, _, rendered = _check(data_dir, "dense.h5ad", fixture_cache)  # the same file within the default budget
    assert code is None, rendered


# ---- property test: arbitrary damage to a valid file ----------------------------------------------------
damage = st.lists(
    st.one_of(
        st.tuples(st.just("flip"), st.floats(0, 1, exclude_max=True), st.integers(1, 255)),
        st.tuples(st.just("zero"), st.floats(0, 1, exclude_max=True), st.integers(1, 4096)),
        st.tuples(st.just("noise"), st.floats(0, 1, exclude_max=True), st.integers(1, 512)),
        st.tuples(st.just("cut"), st.floats(0.0, 1.0, exclude_max=True), st.just(0)),
    ),
    min_size=1,
    max_size=4,
)


def _damaged(blob: bytes, ops: list[tuple[str, float, int]]) -> bytes:
    out = bytearray(blob)
    rng = np.random.default_rng(len(ops))
    for kind, where, n in ops:
        at = 8 + int(where * (len(out) - 8))  # past the signature: damage the HDF5 structure, not just the magic
        if at >= len(out):  # an earlier cut left nothing here
            continue
        if kind == "flip":
            out[at] ^= n
        elif kind == "zero":
            out[at : at + n] = bytes(len(out[at : at + n]))
        elif kind == "noise":
            out[at : at + n] = rng.integers(0, 256, len(out[at : at + n]), dtype=np.uint8).tobytes()
        else:
            del out[at:]
    return bytes(out)


@settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=damage)
def test_damaged_files_end_in_a_coded_error_or_pass_within_the_bound(
    ops: list[tuple[str, float, int]], base: Path, fixture_cache: str
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        path = data / "damaged.h5ad"
        path.write_bytes(_damaged(base.read_bytes(), ops))
        before = _tree(data)
        started = time.monotonic()
        try:
            summary = validate_input(str(path), MODEL, cache_dir=fixture_cache, data_root=data)
        except HelicalAirflowError as exc:
            assert exc.code in CODES, exc.render()
        else:  # harmless damage (e.g. in padding): then the summary must still describe the file
            assert summary.n_cells == CELLS and summary.size_bytes == path.stat().st_size
        assert time.monotonic() - started < BOUND_S
        assert _tree(data) == before


def test_unsorted_rows_read_back_as_the_same_matrix(base: Path, tmp_path: Path) -> None:
    """The one 'hostile' case that is valid: rows read from it equal the canonical matrix."""
    _write(_unsorted_rows)(tmp_path, base)
    with h5io.open_counts(tmp_path / "made.h5ad") as reader:
        rows = reader.read_rows(0, CELLS)
    expected = ad.read_h5ad(base).X
    assert (sp.csr_matrix(rows) != sp.csr_matrix(expected)).nnz == 0
