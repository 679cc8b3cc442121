"""objstore's URL parsing, credential redaction, the work folder of a URL and the storage package errors (no server:
tests/integration/test_object_storage.py runs against a real one)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from helical_airflow import objstore
from helical_airflow.errors import HelicalAirflowError


@pytest.mark.parametrize(
    ("location", "url"),
    [("s3://bucket/a/b.h5ad", True), ("gs://b/x.fa.gz", True), ("az://c/d", True), ("S3://B/k", True),
     ("file:///tmp/x.h5ad", False), ("data/sample.h5ad", False), ("/abs/x.h5ad", False), ("s3:/b/k", False)],
)  # fmt: skip
def test_is_url_tells_object_storage_from_local_paths(location: str, url: bool) -> None:
    assert objstore.is_url(location) is url


def test_parse_splits_protocol_bucket_and_key() -> None:
    url = objstore.parse("S3://my-bucket/outputs//sample/")
    assert (url.protocol, url.bucket, url.key, url.path) == (
        "s3",
        "my-bucket",
        "outputs//sample",
        "my-bucket/outputs//sample",
    )
    assert str(url.child("pbmc", "abc")) == "s3://my-bucket/outputs//sample/pbmc/abc"
    assert objstore.parse("gs://b").path == "b" and objstore.parse("gs://b/x.h5ad").name == "x.h5ad"


@pytest.mark.parametrize("bad", ["s3://", "s3:///key", "not a url"])
def test_a_url_without_a_bucket_is_e906(bad: str) -> None:
    with pytest.raises(HelicalAirflowError) as caught:
        objstore.parse(bad)
    assert caught.value.code == "E906"


@pytest.mark.parametrize(
    "url",
    [
        "s3://AKIAKEY:s3cr3t@bucket/x.h5ad",
        "s3://bucket/x.h5ad?X-Amz-Signature=s3cr3t",
        "s3://AKIAKEY:s3c/r3t@bucket/x.h5ad",
    ],
)
def test_credentials_in_a_url_are_refused_and_never_repeated(url: str) -> None:
    with pytest.raises(HelicalAirflowError) as caught:
        objstore.parse(url)
    assert caught.value.code == "E907"
    assert "r3t" not in caught.value.render()  # s3cr3t, or s3c/r3t


def test_redact_masks_user_info_and_query_strings_only() -> None:
    text = "failed s3://KEY:s3cr3t@host/b/k and https://h/p?X-Amz-Credential=AK&Signature=s3cr3t; s3://b/plain"
    out = objstore.redact(text)
    assert "s3cr3t" not in out and "KEY" not in out and "AK&" not in out
    assert "s3://***@host/b/k" in out and "https://h/p?***" in out and "s3://b/plain" in out
    assert "r3t" not in objstore.redact("s3://AKIAKEY:s3c/r3t@bucket/x.h5ad")  # a secret holding "/"


def test_a_protocol_without_its_package_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gcsfs", None)  # not importable, installed or not
    objstore._filesystem.cache_clear()
    with pytest.raises(HelicalAirflowError) as caught:
        objstore.filesystem(objstore.parse("gs://bucket/x.h5ad"))
    assert caught.value.code == "E903" and "gcsfs" in caught.value.message and "pip install gcsfs" in caught.value.hint


def test_an_unknown_protocol_is_e903() -> None:
    objstore._filesystem.cache_clear()
    with pytest.raises(HelicalAirflowError) as caught:
        objstore.filesystem(objstore.parse("nosuchproto://bucket/x"))
    assert caught.value.code == "E903"


def test_a_url_output_is_worked_on_in_its_own_folder_and_maps_back(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HELICAL_AIRFLOW_OBJECT_CACHE_DIR", str(tmp_path / "objects"))
    root = objstore.work_root("s3://bucket/outputs")
    assert root.is_relative_to(tmp_path / "objects") and root != objstore.work_root("s3://bucket/other")
    assert str(objstore.run_url("s3://bucket/outputs", root / "pbmc" / "abc123")) == "s3://bucket/outputs/pbmc/abc123"
    assert objstore.work_root(tmp_path / "out") == (tmp_path / "out").resolve()  # a local root is itself
    assert objstore.local_input("data/sample.h5ad") == "data/sample.h5ad"


def test_the_endpoint_setting_reaches_s3_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HELICAL_AIRFLOW_STORAGE_ENDPOINT_URL", "http://127.0.0.1:8333")
    assert objstore.storage_options("s3") == {"client_kwargs": {"endpoint_url": "http://127.0.0.1:8333"}}
    assert objstore.storage_options("gs") == {}


def test_storage_errors_become_coded_errors_naming_the_url() -> None:
    url = objstore.parse("s3://bucket/x.h5ad")
    missing = objstore.coded(FileNotFoundError("x"), url, "reading it")
    denied = objstore.coded(PermissionError("Forbidden"), url, "reading it")
    down = objstore.coded(ConnectionError("http://KEY:s3cr3t@host refused"), url, "reading it")
    assert [e.code for e in (missing, denied, down)] == ["E901", "E902", "E904"]  # type: ignore[attr-defined]
    assert all("s3://bucket/x.h5ad" in str(e) for e in (missing, denied, down))
    assert "s3cr3t" not in str(down)
