"""Object storage (s3://, gs://, az://, ... through fsspec) as a place for inputs and run folders.

One module owns the URL parsing, the fsspec filesystem and its credentials, and the two moves between the store and
the local disk; the rest of the package keeps working on local paths:
- the input: staged as a VERIFIED LOCAL COPY in a cache keyed by the object's URL, ETag and size, hashed while it
  downloads (the run key uses the CONTENT hash, as for a local file: the same bytes give the same run key wherever
  they sit). Why a copy, not byte ranges: h5py over an fsspec file (range GETs) reads the shards slower than
  downloading once and reading locally: 24x slower on a 41 MB, 50,000-cell file in 50 shards, 1.1x on the 0.4 MB
  sample (bench/objstore.py on SeaweedFS, docs/scale-out.md); and the run key's content hash and validation read the
  whole object once anyway;
- the run folder: worked on locally (a work folder per output URL, `HELICAL_AIRFLOW_OBJECT_CACHE_DIR`) and every
  finished file uploaded with one PUT, which S3-like stores make visible whole or not at all (a reader never sees
  half an object). A shard's array goes up before its record (the record is what marks it finished, store.py), and
  manifest.json goes up last among a run's outputs; `latest` is a small pointer object, not a symlink.
  Resume: before embedding, the work folder's shard state is replaced by the bucket's (`pull_run`), so a rerun redoes
  only the shards missing from the store, whatever this machine's disk holds.

Credentials are never taken from a URL, a Param or the command line: the protocol's own chain (AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY / AWS_PROFILE / ~/.aws for s3 through botocore; gcsfs and adlfs read theirs), or in Airflow the
connection named by HELICAL_AIRFLOW_STORAGE_CONN_ID. They live in the filesystem object only; messages carry
`redact(url)`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from . import settings
from .errors import ConfigError, InputValidationError
from .spec import InputSummary, Plan

log = logging.getLogger(__name__)

#: protocol -> the package that brings its fsspec filesystem (named in E903's fix)
PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs",
            "abfss": "adlfs"}  # fmt: skip
_URL = re.compile(r"^(?P<protocol>[A-Za-z][A-Za-z0-9+.-]*)://(?P<rest>.*)$")
CHUNK = 8 << 20  # download block: the hash is updated per block, memory stays flat whatever the file's size
LATEST_POINTER = "latest.json"


@dataclass(frozen=True)
class ObjectURL:
    protocol: str
    bucket: str
    key: str  # no leading slash; "" for the bucket itself

    @property
    def path(self) -> str:
        """The path fsspec takes (bucket/key, no protocol)."""
        return f"{self.bucket}/{self.key}".rstrip("/")

    def __str__(self) -> str:
        return f"{self.protocol}://{self.path}"

    def child(self, *parts: str) -> ObjectURL:
        key = "/".join(p.strip("/") for p in (self.key, *parts) if p.strip("/"))
        return ObjectURL(self.protocol, self.bucket, key)

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]


def is_url(location: str | os.PathLike[str]) -> bool:
    """True for `proto://...` other than file:// (a local path stays a path)."""
    match = _URL.match(str(location))
    return match is not None and match.group("protocol").lower() != "file"


def parse(url: str) -> ObjectURL:
    """`s3://bucket/key` -> ObjectURL; E906 for a URL without a bucket, E907 for one that carries credentials."""
    match = _URL.match(url)
    if not match:
        raise ConfigError("E906", f"{redact(url)} is not an object storage URL", "write it as PROTOCOL://BUCKET/KEY, "
                          "e.g. s3://my-bucket/data/sample.h5ad")  # fmt: skip
    protocol, rest = match.group("protocol").lower(), match.group("rest")
    bucket, _, key = rest.partition("/")
    # a secret key may hold "/": s3://AKID:abc/def@bucket/k parses as bucket "AKID:abc"; bucket names never hold ":"
    if "@" in bucket or ":" in bucket or "?" in rest:
        raise ConfigError(
            "E907", f"{redact(url)} carries credentials or query parameters",
            "give the plain URL; credentials come from the standard variables or files (AWS_ACCESS_KEY_ID, ~/.aws, "
            "...) or the Airflow connection named by HELICAL_AIRFLOW_STORAGE_CONN_ID (docs/scale-out.md)",
        )  # fmt: skip
    if not bucket:
        raise ConfigError("E906", f"{url} names no bucket", "write it as PROTOCOL://BUCKET/KEY")
    return ObjectURL(protocol, bucket, key.strip("/"))


def redact(text: str) -> str:
    """`text` with any URL's user-info (`proto://user:secret@host`) and query string (signatures) masked."""
    # up to the last "@" of the URL: a secret may hold "/" (s3://AKID:abc/def@bucket/k)
    text = re.sub(r"(?P<p>[A-Za-z][A-Za-z0-9+.-]*://)[^\s]*@", r"\g<p>***@", text)
    return re.sub(r"(://[^\s?]*)\?[^\s]*", r"\1?***", text)


# ---- the filesystem and its credentials -----------------------------------------------------------------------------


def connection_options(conn_id: str) -> dict[str, Any]:
    """fsspec options from an Airflow connection (login: access key, password: secret, extra: endpoint_url / region
    / any s3fs client option); only inside an Airflow worker, where airflow is importable. Read once per process
    and connection id: every filesystem call asks for the options, and a connection read is a round trip to the
    secrets backend or the metadata database (a shard's upload is 3 calls; a pull lists and downloads per file)."""
    return dict(_connection_options(conn_id))


@cache
def _connection_options(conn_id: str) -> dict[str, Any]:
    from airflow.sdk.bases.hook import BaseHook

    conn = BaseHook.get_connection(conn_id)
    extra = conn.extra_dejson or {}
    options: dict[str, Any] = {}
    if conn.login:
        options["key"] = conn.login
    if conn.password:
        options["secret"] = conn.password
    client: dict[str, Any] = {}
    for name in ("endpoint_url", "region_name"):
        if extra.get(name):
            client[name] = extra[name]
    if client:
        options["client_kwargs"] = client
    return options


def storage_options(protocol: str) -> dict[str, Any]:
    """The filesystem's options: the endpoint setting (S3-compatible servers), then the Airflow connection when one
    is named. Empty by default: the protocol's own credential chain decides (botocore also honours
    AWS_ENDPOINT_URL itself)."""
    options: dict[str, Any] = {}
    endpoint = settings.get().storage_endpoint_url
    if endpoint and protocol in ("s3", "s3a"):
        options["client_kwargs"] = {"endpoint_url": endpoint}
    conn_id = settings.get().storage_conn_id
    if conn_id:
        from_conn = connection_options(conn_id)
        client = {**options.get("client_kwargs", {}), **from_conn.get("client_kwargs", {})}
        options = {**options, **from_conn, **({"client_kwargs": client} if client else {})}
    return options


@cache
def _filesystem(protocol: str, options_key: str) -> Any:
    import fsspec

    try:
        # one instance per protocol and options, cached here (fsspec's own instance cache would outlive a change of
        # credentials in the environment)
        return fsspec.filesystem(protocol, skip_instance_cache=True, **json.loads(options_key))
    except ImportError as exc:
        package = PACKAGES.get(protocol, f"the fsspec implementation of {protocol}://")
        raise ConfigError(
            "E903", f"{protocol}:// needs the package {package}, which is not installed",
            f"pip install {package} (s3fs comes with the `storage` extra: pip install 'helical-airflow[storage]')",
        ) from exc  # fmt: skip
    except ValueError as exc:  # fsspec: "Protocol not known"
        raise ConfigError(
            "E903", f"no storage package knows {protocol}://", f"use s3://, gs:// or az:// ({exc})"
        ) from exc


def reset() -> None:
    """Forget the cached filesystems and connection options (after credentials changed in this process)."""
    _filesystem.cache_clear()
    _connection_options.cache_clear()


def filesystem(url: ObjectURL) -> Any:
    """The fsspec filesystem for the URL's protocol (one per protocol and options, reused)."""
    return _filesystem(url.protocol, json.dumps(storage_options(url.protocol), sort_keys=True))


def coded(exc: BaseException, url: ObjectURL, doing: str) -> Exception:
    """A storage exception as a coded error that names the URL and the fix (never the credentials)."""
    if isinstance(exc, FileNotFoundError):
        return InputValidationError(
            "E901", f"{url} does not exist ({doing}: the bucket or the object is missing)",
            f"check the bucket and key (e.g. `aws s3 ls s3://{url.bucket}/`); upload the input there, or create the "
            "bucket of an --out URL first",
        )  # fmt: skip
    if isinstance(exc, PermissionError) or type(exc).__name__ in ("NoCredentialsError", "PartialCredentialsError"):
        return ConfigError(
            "E902", f"access to {url} was refused or no credentials were found ({doing}: {type(exc).__name__})",
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE / ~/.aws/credentials; gcsfs and adlfs "
            "read their own), or name an Airflow connection in HELICAL_AIRFLOW_STORAGE_CONN_ID; the key needs read "
            "(input) and write (output) access to the bucket",
        )  # fmt: skip
    unreachable = ConfigError(
        "E904", f"object storage at {url} could not be reached ({doing}: {type(exc).__name__}: {redact(str(exc))})",
        "check the endpoint (AWS_ENDPOINT_URL or HELICAL_AIRFLOW_STORAGE_ENDPOINT_URL for an S3-compatible server) "
        "and the network, then rerun: finished shards are kept in the store",
    )  # fmt: skip
    unreachable.retryable = True  # type: ignore[attr-defined]  # a DAG task is retried (fail_fast_on_user_errors)
    return unreachable


def _call(url: ObjectURL, doing: str, func: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return func(*args, **kwargs)
    except (ConfigError, InputValidationError):
        raise
    except Exception as exc:  # every fsspec backend raises its own; coded() sorts them
        raise coded(exc, url, doing) from exc


# ---- the input: a verified local copy ------------------------------------------------------------------------------


def cache_root() -> Path:
    return settings.get().object_cache_dir


def local_input(location: str) -> str:
    """The local path to read `location` from: itself for a local path, the verified staged copy for a URL."""
    return str(stage(parse(location))) if is_url(location) else location


def stage(url: ObjectURL) -> Path:
    """Download `url` once into the cache (keyed by URL, ETag and size; its sha256 beside it), hashing as it comes,
    and return the copy. A cached copy is reused only when the object's ETag and size still match and the copy's
    size and recorded hash are there; a copy made while the object changed is refused (E905)."""
    fs = filesystem(url)
    info = _call(url, "reading its size and ETag", fs.info, url.path)
    if info.get("type") == "directory":
        raise coded(FileNotFoundError(url.path), url, "it is a folder, not an object")
    size, etag = int(info.get("size") or 0), str(info.get("ETag") or info.get("etag") or info.get("md5") or "")
    ident = hashlib.sha256(f"{url}\0{etag}\0{size}".encode()).hexdigest()[:24]
    folder = cache_root() / "inputs" / ident
    copy, digest_file = folder / url.name, folder / f".{url.name}.sha256"
    if copy.is_file() and copy.stat().st_size == size and digest_file.is_file():
        log.info("input %s: the staged copy %s is current (ETag %s)", url, copy, etag)
        return copy
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{url.name}.", suffix=".part", dir=folder)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, _call(url, "opening it", fs.open, url.path, "rb", block_size=CHUNK) as src:
            while block := _call(url, "downloading it", src.read, CHUNK):
                digest.update(block)
                out.write(block)
        got = os.path.getsize(tmp_name)
        now = _call(url, "checking it after the download", fs.info, url.path)
        now_etag = str(now.get("ETag") or now.get("etag") or now.get("md5") or "")
        if got != size or now_etag != etag:
            raise InputValidationError(
                "E905", f"{url} changed while it was downloaded ({size} -> {got} bytes, ETag {etag} -> {now_etag})",
                "wait until the upload is complete (upload, then copy to the final key), then rerun",
            )  # fmt: skip
        os.replace(tmp_name, copy)
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    digest_file.write_text(digest.hexdigest() + "\n")
    log.info("input %s staged at %s (%d bytes, sha256 %s)", url, copy, size, digest.hexdigest())
    return copy


def ensure_input(summary: InputSummary) -> InputSummary:
    """The summary with a readable local `path`: as it is when the copy is there (or the input is local); else the
    input staged again from its URL on this machine (a worker that shares only the store with the one that validated
    it), which must hold the same bytes that were validated (E905 otherwise)."""
    if summary.source is None or Path(summary.path).is_file():
        return summary
    copy = stage(parse(summary.source))
    digest = (copy.parent / f".{copy.name}.sha256").read_text().strip()
    if digest != summary.sha256:
        raise InputValidationError(
            "E905", f"{summary.source} changed since it was validated (sha256 {summary.sha256[:12]} -> {digest[:12]})",
            "rerun the whole job on the new object (a new run key), or put the validated object back",
        )  # fmt: skip
    return summary.model_copy(update={"path": str(copy)})


# ---- the run folder: worked on locally, every finished file uploaded whole -------------------------------------------


def work_root(out_root: str | os.PathLike[str]) -> Path:
    """Where a run under `out_root` is worked on: `out_root` itself for a local folder; for a URL, a work folder of
    its own in the object cache (the store holds the truth, see pull_run)."""
    if not is_url(out_root):
        return Path(out_root).resolve()
    url = parse(str(out_root))
    return cache_root() / "work" / hashlib.sha256(str(url).encode()).hexdigest()[:16]


def run_url(out_root: str, out_dir: Path) -> ObjectURL:
    """The run folder's URL: the work folder's path below work_root, under the output URL."""
    return parse(out_root).child(out_dir.relative_to(work_root(out_root)).as_posix())


#: what a rerun needs of a run folder in the store: the shards (arrays and records), the outputs' manifest and report
#: (a finished run is then found current, pipeline._outputs_current), the batch size a memory stop left, and the log
#: (appended to, as on disk). embeddings.h5ad is not downloaded: it is written again whenever the shards change.
PULLED = ("manifest.json", "report.html", "batch_size.json", "run.log")
_PULL_RECORD = ".pulled.json"


#: what the DAG's gate and publish steps also need, on whichever worker they run: the merged embeddings
MERGED = ("embeddings.h5ad",)


def pull_run(out_root: str, out_dir: Path, merged: bool = False, prune: bool = True) -> int:
    """Make the local run folder's state what the store holds: local shard files the store lacks are removed (the
    store is the truth; `prune` False keeps them: a DAG task, whose worker may run another task of the same run in
    the same work folder, with finished shards not yet uploaded), the store's shards and `PULLED` files downloaded
    (with `merged`, also `MERGED`: the DAG's steps after merge). Returns how many shard records the store had."""
    wanted = PULLED + (MERGED if merged else ())
    url = run_url(out_root, out_dir)
    fs = filesystem(url)
    listing = _call(url, "listing the run folder", fs.find, url.path, detail=True)
    remote = {name[len(url.path) + 1 :]: int(info.get("size") or 0) for name, info in listing.items()}
    shards = out_dir / "shards"
    if prune and shards.is_dir():
        for path in shards.iterdir():
            if _shard_state(path.name) and f"shards/{path.name}" not in remote:
                path.unlink()
    pulled: dict[str, list[int]] = {}
    for rel, size in sorted(remote.items()):
        if not ((rel.startswith("shards/") and _shard_state(rel.removeprefix("shards/"))) or rel in wanted):
            continue
        local = out_dir / rel
        if not (local.is_file() and local.stat().st_size == size):
            local.parent.mkdir(parents=True, exist_ok=True)
            tmp = local.with_name(f".{local.name}.part")
            _call(url, f"downloading {rel}", fs.get_file, f"{url.path}/{rel}", str(tmp))
            os.replace(tmp, local)
        stat = local.stat()
        pulled[rel] = [stat.st_size, stat.st_mtime_ns]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / _PULL_RECORD).write_text(json.dumps(pulled))
    return sum(1 for rel in remote if rel.startswith("shards/") and rel.endswith(".json"))


def _unchanged_since_pull(out_dir: Path) -> set[str]:
    """The run folder's files that are exactly what pull_run downloaded (no need to upload them again)."""
    try:
        pulled = json.loads((out_dir / _PULL_RECORD).read_text())
    except (OSError, ValueError):
        return set()
    same = set()
    for rel, (size, mtime_ns) in pulled.items():
        path = out_dir / rel
        if path.is_file() and [path.stat().st_size, path.stat().st_mtime_ns] == [size, mtime_ns]:
            same.add(rel)
    return same


def push(out_root: str, out_dir: Path, files: Iterable[Path]) -> None:
    """Upload each file (one PUT each: a reader sees the whole object or none) in the order given."""
    url = run_url(out_root, out_dir)
    fs = filesystem(url)
    for path in files:
        rel = path.relative_to(out_dir).as_posix()
        _call(url, f"uploading {rel}", fs.put_file, str(path), f"{url.path}/{rel}")


def _shard_state(name: str) -> bool:
    """A shard's state in the store: its arrays (`<i>.npy`, and files beside it such as the fp32 agreement rows
    `<i>.fp32.npy`) and its record (`<i>.json`); never a lock file (`<i>.lock`, held by a local process) or a
    dot-file being written."""
    return not name.startswith(".") and name.endswith((".npy", ".json"))


def push_shard(out_root: str, out_dir: Path, npy: Path, record: Path) -> None:
    """A finished shard: the array first, then the files its process wrote beside it (e.g. `<i>.fp32.npy`, which the
    gate of a reduced-precision run reads: a resumed run must find them), then the record that marks it finished
    (store.finished_result)."""
    beside = sorted(p for p in npy.parent.glob(f"{npy.stem}.*.npy") if p.is_file())
    push(out_root, out_dir, [npy, *beside, record])


#: the merged outputs, uploaded in this order once merge, gate and report are done; manifest.json last (a reader
#: that sees the manifest sees every output it names)
FINAL_ORDER = ("plan.json", "batch_size.json", "run.log", "report.html", "embeddings.h5ad")


def push_outputs(out_root: str, out_dir: Path, latest: bool) -> ObjectURL:
    """Upload the run folder's files but the shards (uploaded as they finished): outputs, then manifest.json, then
    the `<dataset>/latest.json` pointer when the run is the dataset's latest. Returns the run's URL."""
    same = _unchanged_since_pull(out_dir)
    url = run_url(out_root, out_dir)
    # other files a shard's process left beside its array (e.g. the fp32 agreement rows, shards/<i>.fp32.npy), which
    # the store lacks: before the outputs, so a manifest in the store always comes with them
    stored = {name[len(url.path) + 1 :] for name in _call(url, "listing the shards", filesystem(url).find, url.path)}
    extra = [p for p in sorted((out_dir / "shards").glob("*")) if p.is_file() and _shard_state(p.name)
             and f"shards/{p.name}" not in stored]  # fmt: skip
    push(out_root, out_dir, extra)
    names = [p for p in sorted(out_dir.iterdir()) if p.is_file() and not p.name.startswith(".") and p.name not in same]
    ordered = sorted((p for p in names if p.name != "manifest.json"),
                     key=lambda p: (FINAL_ORDER.index(p.name) if p.name in FINAL_ORDER else -1, p.name))  # fmt: skip
    ordered += [p for p in names if p.name == "manifest.json"]
    push(out_root, out_dir, ordered)
    if latest:
        pointer = ObjectURL(url.protocol, url.bucket, f"{url.key.rsplit('/', 1)[0]}/{LATEST_POINTER}")
        body = json.dumps({"run_key": out_dir.name, "url": str(url)}, indent=2) + "\n"
        _call(pointer, "writing the latest pointer", filesystem(pointer).pipe_file, pointer.path, body.encode())
    return url


def read_latest(dataset_url: str) -> str:
    """The run key a dataset's `latest.json` pointer names."""
    url = parse(dataset_url).child(LATEST_POINTER)
    raw = _call(url, "reading the latest pointer", filesystem(url).cat_file, url.path)
    return str(json.loads(raw)["run_key"])


def clear_work(out_dir: Path) -> None:
    """Drop a run's local work copy (the store holds it now)."""
    shutil.rmtree(out_dir, ignore_errors=True)


# ---- the workflow DAG's runs: the store is the truth, each task works in its own worker's work folder ---------------
#
# plan_shards writes plan.json in its worker's work folder and uploads it; every later task (on any worker) gets the
# plan's URL, brings plan.json into ITS work folder with the run folder and input made local (open_plan), pulls the
# run's state from the store, does its step and uploads what it made: each embed task its finished shards (array,
# files beside it, record) while it runs; merge, gate and publish their outputs, manifest.json last, latest.json only
# from publish after a passed gate. Nothing a task hands on names a worker-local path.

PLAN = "plan.json"


def output_location(param: str | None = None) -> str:
    """Where the workflow DAG writes runs: the `output` Param when given (an object storage URL, E909 otherwise;
    E906 / E907 for a bad one), else HELICAL_AIRFLOW_OUTPUT_DIR (a folder or a URL), else `<data>/outputs`."""
    chosen = (param or "").strip()
    if chosen and not is_url(chosen):
        raise ConfigError(
            "E909", f"the output Param {chosen!r} is not an object storage URL",
            "give PROTOCOL://BUCKET/PREFIX (e.g. s3://my-bucket/outputs), or leave it empty for the worker's output "
            "folder (HELICAL_AIRFLOW_OUTPUT_DIR); a local folder is the worker's setting, never a Param",
        )  # fmt: skip
    chosen = chosen or settings.get().env("HELICAL_AIRFLOW_OUTPUT_DIR").strip()
    return str(parse(chosen)) if is_url(chosen) else str(settings.output_dir())


def plan_url(out_root: str, out_dir: Path) -> str:
    """The URL of a run's plan.json in the store (what the DAG's tasks hand on)."""
    return str(run_url(out_root, out_dir).child(PLAN))


def _write_private_copy(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def open_plan(plan_ref: str, merged: bool = False) -> tuple[Plan, str]:
    """The plan a DAG task works on, on this worker, and the output URL, from the plan's URL
    (`<output>/<dataset>/<run key>/plan.json`): the store's plan.json written into this worker's work folder with
    its run folder made that folder and its input readable here (ensure_input: staged again on a worker that lacks
    the copy), then the run's state pulled from the store (pull_run; `merged`: the embeddings too)."""
    url = parse(plan_ref)
    parts = url.key.split("/")
    if len(parts) < 3 or parts[-1] != PLAN:
        raise ConfigError("E906", f"{url} is not a run's plan URL", "pass <output>/<dataset>/<run key>/plan.json")
    out_root = str(ObjectURL(url.protocol, url.bucket, "/".join(parts[:-3])))
    out_dir = work_root(out_root) / parts[-3] / parts[-2]
    raw = _call(url, "reading the plan", filesystem(url).cat_file, url.path)
    stored = Plan.model_validate_json(raw)
    plan = stored.model_copy(update={"out_dir": str(out_dir), "input": input_here(stored.input)})
    _write_private_copy(out_dir / PLAN, plan.model_dump_json(indent=2) + "\n")
    # no pruning: another task of this run on this worker (a GPU worker runs one per GPU) may hold finished shards
    # its upload thread has not sent yet; a local shard the store lacks is uploaded by its group's task
    # (uploading_shards), never trusted as stored
    pull_run(out_root, out_dir, merged=merged, prune=False)
    return plan, out_root


def input_here(summary: InputSummary) -> InputSummary:
    """ensure_input, with an object storage input's copy always this worker's own (its object cache): a path in
    another worker's cache, even one this machine can read (two workers on one host), is that worker's state."""
    if summary.source is not None and not Path(summary.path).resolve().is_relative_to(cache_root().resolve()):
        summary = summary.model_copy(update={"path": str(cache_root() / "inputs" / "not-staged-here")})
    return ensure_input(summary)


def push_plan(out_root: str, out_dir: Path) -> str:
    """Upload a freshly planned run's plan.json (and any other file the planning step left at the top of the run
    folder but outputs); returns the plan's URL."""
    keep = {*FINAL_ORDER, "manifest.json"} - {PLAN}
    files = [p for p in sorted(out_dir.iterdir()) if p.is_file() and not p.name.startswith(".") and p.name not in keep]
    push(out_root, out_dir, sorted(files, key=lambda p: p.name == PLAN))  # plan.json last: what the tasks read
    return plan_url(out_root, out_dir)


@contextlib.contextmanager
def uploading_shards(out_root: str, plan: Plan, shards: list[int], every_s: float = 1.0) -> Iterator[None]:
    """While the body embeds `shards` (in another process), upload each as soon as its record appears (push_shard:
    array, files beside it, record), from a thread polling every `every_s`; a last sweep on the way out, also when
    the body fails (a shard finished before a crash is kept). Shards whose record was pulled from the store (and is
    unchanged since) are not uploaded again; a record left locally by an earlier attempt is uploaded. Why a thread
    here rather than the shard process: the launcher's process knows only its local plan, not the store, and a
    worker killed mid-group then loses at most the shard in progress."""
    stored = _unchanged_since_pull(plan.out_path)
    done = {i for i in shards if plan.shard_result_file(i).relative_to(plan.out_path).as_posix() in stored}
    stop = threading.Event()

    def sweep() -> None:
        for index in shards:
            if index not in done and plan.shard_result_file(index).is_file():
                push_shard(out_root, plan.out_path, plan.shard_file(index), plan.shard_result_file(index))
                done.add(index)
                log.info("shard %d uploaded to %s", index, run_url(out_root, plan.out_path))

    def loop() -> None:
        while not stop.wait(every_s):
            try:
                sweep()
            except Exception as exc:  # a failed upload is tried again at the next sweep and at the end
                log.warning("uploading shards: %s", redact(str(exc)))

    thread = threading.Thread(target=loop, name="shard-uploads", daemon=True)
    thread.start()
    failed = False
    try:
        yield
    except BaseException:
        failed = True
        raise
    finally:
        stop.set()
        thread.join()
        try:
            sweep()
        except Exception as exc:
            if not failed:
                raise
            log.warning("uploading the finished shards after the failure: %s", redact(str(exc)))


def run_outputs(out_root: str | None, plan: Plan) -> dict[str, str]:
    """Where a run's outputs are for the DAG's XComs: the run folder's paths, or in the store their URLs."""
    names = {"embeddings": "embeddings.h5ad", "manifest": "manifest.json", "report": "report.html"}
    if out_root is None:
        return {"out_dir": plan.out_dir, **{key: str(plan.out_path / name) for key, name in names.items()}}
    url = run_url(out_root, plan.out_path)
    return {"out_dir": str(url), **{key: str(url.child(name)) for key, name in names.items()}}
