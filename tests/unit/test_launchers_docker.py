"""The docker launcher's container spec: mounts, GPU requests, removal, the command line (the real
container run is tests/integration/test_docker_launcher.py, against podman)."""

from __future__ import annotations

from pathlib import Path

import pytest

from helical_airflow.plan import resolve_params

pytest.importorskip("airflow.providers.docker")

from helical_airflow.launchers.docker import (  # noqa: E402
    CONTAINER_CACHE,
    CONTAINER_DATA,
    DockerSettings,
    container_mounts,
    docker_operator,
)
from helical_airflow.spec import InputSummary, Plan, RunParams  # noqa: E402


def _mounts(mounts: list) -> dict[str, tuple[str, str, bool]]:  # type: ignore[type-arg]
    return {m["Target"]: (m["Source"], m["Type"], m["ReadOnly"]) for m in mounts}


def test_data_is_at_opt_data_and_at_the_workers_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HELICAL_AIRFLOW_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("HELICAL_AIRFLOW_OUTPUT_DIR", raising=False)
    cfg = DockerSettings(host_data_dir="/srv/host/data", cache_source="helical-weights",
                         extra_mounts=["/opt/py:/opt/py:ro"])  # fmt: skip
    got = _mounts(container_mounts(cfg, "/worker/cache"))
    assert got[CONTAINER_DATA] == ("/srv/host/data", "bind", True)  # inputs: read-only
    assert got[str(tmp_path / "data")] == ("/srv/host/data", "bind", True)  # plan.json's paths resolve
    # outputs inside the data folder still get their own writable mount (nested over the read-only data)
    assert got[str(tmp_path / "data" / "outputs")] == ("/srv/host/data/outputs", "bind", False)
    assert got[CONTAINER_CACHE] == ("helical-weights", "volume", False)  # a bare name is a named volume
    assert got["/worker/cache"] == ("helical-weights", "volume", False)
    assert got["/opt/py"] == ("/opt/py", "bind", True)
    assert len(got) == 6


def test_in_compose_paths_match_so_each_folder_is_mounted_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HELICAL_AIRFLOW_DATA_DIR", CONTAINER_DATA)
    monkeypatch.setenv("HELICAL_AIRFLOW_OUTPUT_DIR", "/opt/outputs")  # docker-compose.yml's layout
    cfg = DockerSettings(host_data_dir="/home/me/data", host_output_dir="/home/me/outputs", cache_source="w")
    got = _mounts(container_mounts(cfg, CONTAINER_CACHE))
    assert got == {
        CONTAINER_DATA: ("/home/me/data", "bind", True),
        "/opt/outputs": ("/home/me/outputs", "bind", False),
        CONTAINER_CACHE: ("w", "volume", False),
    }


def _plan(tmp_path: Path, model: str, device: str = "auto") -> str:
    summary = InputSummary(path=str(tmp_path / "x.h5ad"), sha256="0" * 64, size_bytes=1, n_cells=10, n_genes=5,
                           x_source="X", x_format="csr", dtype="int32", gene_id_kind="symbol", genes_in_vocab=5,
                           vocab_overlap=1.0)  # fmt: skip
    plan = Plan(run_key="abc123", dataset="x", out_dir=str(tmp_path / "out"), input=summary,
                params=resolve_params(RunParams(model=model, device=device, cache_dir="/worker/cache")),
                model_family="geneformer",
                helical_model_name=model, fixture=True, weights_checksum="w", code_version="c", shards=[],
                created_at="now")  # fmt: skip
    path = tmp_path / f"{model}-{device}.json"
    path.write_text(plan.model_dump_json())
    return str(path)


def test_gpu_profiles_request_gpus_and_containers_are_always_removed(tmp_path: Path) -> None:
    from helical_airflow.models import get_model

    cfg = DockerSettings(image="runner:test", gpu_image="runner:test-cuda", docker_url="unix:///tmp/none.sock")
    gpu_model = next(n for n in ("gf-20L-151M-i4096", "tf_sapiens") if get_model(n).profile.gpu == "required")
    op = docker_operator(_plan(tmp_path, gpu_model), [4, 5], cfg)
    # the image's ENTRYPOINT is helical-airflow: the command is its arguments, a group of shards
    assert op.command == ["embed-shard", "--plan", _plan(tmp_path, gpu_model), "--shard", "4", "--shard", "5"]
    assert op.device_requests and op.device_requests[0]["Capabilities"] == [["gpu"]]
    # kept until run_docker has read its exit status through the Docker API (then removed); no xcom: the store
    assert op.auto_remove == "never" and op.mount_tmp_dir is False and op.do_xcom_push is False
    assert op.mem_limit == f"{get_model(gpu_model).profile.memory_cap_gb:g}g"
    assert op.image == "runner:test-cuda" and op.docker_url == "unix:///tmp/none.sock"  # GPU shard: CUDA image

    cpu = docker_operator(_plan(tmp_path, "geneformer", "cpu"), [0], cfg)
    assert cpu.device_requests is None and cpu.image == "runner:test"  # CPU shard: CPU image, no GPU asked
    cuda = docker_operator(_plan(tmp_path, "geneformer", "cuda"), [0], cfg)  # asked for CUDA
    assert cuda.device_requests and cuda.image == "runner:test-cuda"
    # without a GPU image configured, GPU shards keep the one image (and still get the GPUs)
    single = docker_operator(_plan(tmp_path, gpu_model), [0], DockerSettings(image="one:1"))
    assert single.image == "one:1" and single.device_requests


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HELICAL_AIRFLOW_DOCKER_IMAGE", "r:cpu")
    monkeypatch.setenv("HELICAL_AIRFLOW_DOCKER_GPU_IMAGE", "r:cuda")
    monkeypatch.setenv("HELICAL_AIRFLOW_DOCKER_URL", "tcp://docker-socket-proxy:2375")
    monkeypatch.setenv("HELICAL_AIRFLOW_HOST_OUTPUT_DIR", "/srv/outputs")
    cfg = DockerSettings.from_env()
    assert (cfg.image, cfg.gpu_image, cfg.docker_url, cfg.host_output_dir) == (
        "r:cpu", "r:cuda", "tcp://docker-socket-proxy:2375", "/srv/outputs",
    )  # fmt: skip
