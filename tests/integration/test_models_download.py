"""`models download` through helical's own Downloader, against a local HTTP server standing in for helical's store.

The server serves a fixture cache's files at their cache paths and answers HEAD with Content-Length and an MD5
ETag, as S3 does for a single-part upload (what helical's `check_file_valid` compares).
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helical_airflow.models import cache as model_cache
from helical_airflow.models import get_model, registry
from helical_airflow.models.fixture import build_fixture

MODEL = "gf-6L-10M-i2048"


class _Store(http.server.SimpleHTTPRequestHandler):
    gets: list[str] = []
    missing: set[str] = set()

    def end_headers(self) -> None:
        path = Path(self.translate_path(self.path))
        if path.is_file():
            self.send_header("ETag", f'"{hashlib.md5(path.read_bytes()).hexdigest()}"')
        super().end_headers()

    def do_GET(self) -> None:
        _Store.gets.append(self.path)
        if self.path.lstrip("/") in _Store.missing:
            self.send_error(404)
            return
        super().do_GET()

    def do_HEAD(self) -> None:
        if self.path.lstrip("/") in _Store.missing:
            self.send_error(404)
            return
        super().do_HEAD()

    def log_message(self, *args: Any) -> None:
        """Quiet: the test reads the requests from `gets`, not from stderr."""


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    source = tmp_path_factory.mktemp("store")
    build_fixture(source, families=(), models=[MODEL])
    served = model_cache.models_dir(str(source))
    handler = lambda *a, **k: _Store(*a, directory=str(served), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", served
    server.shutdown()


def _download(url: str, cache_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HELICAL_AIRFLOW_MODELS_URL": url}
    env.pop("CACHE_DIR_HELICAL_PREFIX", None)
    return subprocess.run(
        [sys.executable, "-m", "helical_airflow.cli", "models", "download", MODEL, "--cache-dir", str(cache_dir)],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip


def _files() -> list[str]:
    return [*registry.required_files(get_model(MODEL), {}), model_cache.ENSEMBL_MAPPING_FILE]


def test_download_fetches_every_file_then_keeps_them(store: tuple[str, Path], tmp_path: Path) -> None:
    url, served = store
    _Store.gets.clear()
    done = _download(url, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == str(tmp_path)
    root = model_cache.models_dir(str(tmp_path))
    for rel in _files():
        assert (root / rel).read_bytes() == (served / rel).read_bytes(), rel
    assert not list(root.rglob("*.part"))
    record = json.loads((tmp_path / "DOWNLOADS.json").read_text())[MODEL]["files"]
    assert set(record) == set(_files())
    assert record[_files()[0]]["sha256"] == hashlib.sha256((served / _files()[0]).read_bytes()).hexdigest()
    assert len(_Store.gets) == len(_files())
    assert "downloaded" in done.stderr

    # a second run asks the store (HEAD) but downloads nothing; a corrupted file is fetched again, alone
    _Store.gets.clear()
    again = _download(url, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert _Store.gets == [] and "downloaded" not in again.stderr
    weights = root / _files()[-2]
    weights.write_bytes(b"truncated")
    third = _download(url, tmp_path)
    assert third.returncode == 0, third.stderr[-3000:]
    assert _Store.gets == ["/" + _files()[-2]]
    assert weights.read_bytes() == (served / _files()[-2]).read_bytes()


def test_a_file_the_store_lacks_is_a_coded_error_and_leaves_no_partial_file(
    store: tuple[str, Path], tmp_path: Path
) -> None:
    url, _ = store
    _Store.missing = {_files()[1]}
    try:
        done = _download(url, tmp_path)
    finally:
        _Store.missing = set()
    assert done.returncode == 2, done.stderr[-3000:]
    assert "error E230" in done.stderr and "Traceback" not in done.stderr
    root = model_cache.models_dir(str(tmp_path))
    assert (root / _files()[0]).is_file()  # what came before is kept for the next run
    assert not (root / _files()[1]).exists() and not list(root.rglob("*.part"))


def test_download_refuses_a_fixture_cache(store: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = store
    build_fixture(tmp_path, families=(), models=[MODEL])
    done = _download(url, tmp_path)
    assert done.returncode == 2 and "error E226" in done.stderr
