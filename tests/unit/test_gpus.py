"""One shard group per GPU (gpus.py) with a faked device count: which GPUs a worker has, a lease per GPU that a
crash frees, the local launcher pinning each concurrent group to its own GPU, the docker launcher's device_ids,
the stack's gpu pool sized from the count, and a second worker that shares only the broker, DB and outputs.
The real pinning on a GPU machine is bench/gpu_check.sh."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from helical_airflow import gpus
from helical_airflow.errors import ConfigError
from helical_airflow.plan import resolve_params
from helical_airflow.spec import InputSummary, Plan, RunParams


def _fake_nvidia_smi(folder: Path, n: int) -> str:
    """A `nvidia-smi` that lists n GPUs (as the real one prints them), first on a PATH of its own."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = "".join(f"GPU {i}: NVIDIA H100 80GB HBM3 (UUID: GPU-{i:08d}-fake)\\n" for i in range(n))
    script = folder / "nvidia-smi"
    script.write_text(f'#!/bin/sh\n[ "$1" = "-L" ] && printf "{lines}"\n')
    script.chmod(0o755)
    return f"{folder}{os.pathsep}{os.environ['PATH']}"


def test_the_gpus_are_detected_or_set(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("PATH", _fake_nvidia_smi(tmp_path / "bin", 4))
    monkeypatch.setenv("HELICAL_AIRFLOW_GPUS", "auto")
    assert gpus.devices() == ("0", "1", "2", "3")  # one per `nvidia-smi -L` line
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")  # a worker restricted to some GPUs leases only those
    assert gpus.devices() == ("3", "1")
    monkeypatch.setenv("HELICAL_AIRFLOW_GPUS", "2")
    assert gpus.devices() == ("3", "1")  # a count on a restricted worker: the first N of its own
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert gpus.devices() == ("0", "1")
    monkeypatch.setenv("HELICAL_AIRFLOW_GPUS", "0,2,5")
    assert gpus.devices() == ("0", "2", "5")
    monkeypatch.setenv("HELICAL_AIRFLOW_GPUS", "0")
    assert gpus.devices() == ()
    for bad in ("two", "1,1", "1,,2", "0 1"):
        monkeypatch.setenv("HELICAL_AIRFLOW_GPUS", bad)
        with pytest.raises(ConfigError) as err:
            gpus.devices()
        assert err.value.code == "E531" and bad in err.value.message


def test_a_worker_restricted_by_cuda_visible_devices_leases_only_its_gpus(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """CUDA_VISIBLE_DEVICES read as CUDA reads it, on a machine whose nvidia-smi lists 8 GPUs: the GPU count, the
    leased ids and the pool size agree with what torch would see under it."""
    monkeypatch.setenv("PATH", _fake_nvidia_smi(tmp_path / "bin", 8))
    monkeypatch.setenv("HELICAL_AIRFLOW_GPUS", "auto")
    cases = {
        "2,3": ("2", "3"),
        "3,02": ("3", "2"),  # a leading zero, as CUDA takes it
        "GPU-aa11-bb22,GPU-cc33": ("GPU-aa11-bb22", "GPU-cc33"),
        "MIG-0d5f-11aa": ("MIG-0d5f-11aa",),
        "": (),  # set but empty: no GPU (not every GPU)
        "-1": (),
        "4,-1,5": ("4",),  # CUDA stops at the first invalid id
        "6,GPU-aa11": ("6",),  # ...and at a UUID after an index
        "1,1": (),  # a repeated id hides them all
    }
    from torch.cuda import _parse_visible_devices  # what torch.cuda.device_count() counts under it

    for visible, expected in cases.items():
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
        assert tuple(map(str, _parse_visible_devices())) == expected, visible
        assert (gpus.devices(), gpus.count()) == (expected, len(expected)), visible
        assert gpus.default_pool_slots() == max(1, len(expected)), visible
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    leased = []
    with gpus.lease(lock_dir=tmp_path / "leases") as first, gpus.lease(lock_dir=tmp_path / "leases") as second:
        leased = [first, second]
    assert leased == ["2", "3"]  # the worker's own two, never 0 or 1
    monkeypatch.setenv("HELICAL_AIRFLOW_GPUS", "1")  # a count takes the first N the worker may use
    assert gpus.devices() == ("2",)
    monkeypatch.setenv("HELICAL_AIRFLOW_GPUS", "3")
    with pytest.raises(ConfigError) as err:
        gpus.devices()
    assert err.value.code == "E531" and "CUDA_VISIBLE_DEVICES=2,3" in err.value.message
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert gpus.devices() == ("0", "1", "2")


def test_the_shard_records_the_gpu_its_launcher_leased(monkeypatch: pytest.MonkeyPatch) -> None:
    """The manifest's `gpu`: the launcher's id (a container sees its GPU as device 0), else the device plugin's one
    GPU of a pod, nothing for several (their order inside the pod is not known) or on a CPU."""
    from helical_airflow.embed import _gpu_id

    monkeypatch.setenv("HELICAL_AIRFLOW_GPU_ID", "5")
    monkeypatch.setenv("NVIDIA_VISIBLE_DEVICES", "all")  # a CUDA image's default
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert (_gpu_id("cuda"), _gpu_id("cpu")) == ("5", None)
    monkeypatch.delenv("HELICAL_AIRFLOW_GPU_ID")
    monkeypatch.setenv("NVIDIA_VISIBLE_DEVICES", "GPU-0f3c2a")  # a pod: the device plugin's pick
    assert _gpu_id("cuda") == "GPU-0f3c2a"
    monkeypatch.setenv("NVIDIA_VISIBLE_DEVICES", "GPU-0f3c2a,GPU-77ab01")
    assert _gpu_id("cuda") is None


def test_concurrent_leases_get_different_gpus_and_a_crash_frees_its_gpu(tmp_path: Path) -> None:
    ids = ("0", "1")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from helical_airflow import gpus\n"
         f"with gpus.lease({ids!r}, Path({str(tmp_path)!r})) as g:\n    print(g, flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "0"
        with gpus.lease(ids, tmp_path) as mine:
            assert mine == "1"  # GPU 0 is the other process's
            with pytest.raises(TimeoutError, match="2 GPU"), gpus.lease(ids, tmp_path, wait_s=0.3):
                pass  # both leased: a third group waits rather than share one
        os.kill(holder.pid, signal.SIGKILL)  # a crash: the kernel drops its flock
        holder.wait(timeout=10)
        with gpus.lease(("0",), tmp_path, wait_s=5) as freed:
            assert freed == "0"
    finally:
        holder.kill()
        holder.wait(timeout=10)
    with gpus.lease((), tmp_path) as none:
        assert none is None  # no GPU: nothing to pin


def _plan(tmp_path: Path, device: str, model: str = "geneformer", weights: dict[str, str] | None = None) -> str:
    summary = InputSummary(path=str(tmp_path / "x.h5ad"), sha256="0" * 64, size_bytes=1, n_cells=10, n_genes=5,
                           x_source="X", x_format="csr", dtype="int32", gene_id_kind="symbol", genes_in_vocab=5,
                           vocab_overlap=1.0)  # fmt: skip
    plan = Plan(run_key="abc123", dataset="x", out_dir=str(tmp_path / "out"), input=summary,
                params=resolve_params(RunParams(model=model, device=device, cache_dir=str(tmp_path / "planner"))),
                model_family="geneformer", helical_model_name=model, fixture=True, weights_checksum="w",
                weights_files=weights or {}, code_version="c", shards=[], created_at="now")  # fmt: skip
    path = tmp_path / f"plan-{model}-{device}.json"
    path.write_text(plan.model_dump_json())
    return str(path)


def test_the_local_launcher_pins_each_concurrent_group_to_its_own_gpu(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Two groups launched at once by a worker restricted to GPUs 5 and 2 of an 8-GPU machine: each embed process
    sees one of those two (not 0 or 1: its CUDA_VISIBLE_DEVICES holds the machine's id), not the same one, and is told
    that id for its manifest; a CPU plan is pinned to none. The embed process is a stand-in that records what it was
    given and exits."""
    from helical_airflow.launchers.base import LaunchError
    from helical_airflow.launchers.local import run_local

    monkeypatch.setenv("HELICAL_AIRFLOW_GPUS", "auto")
    monkeypatch.setenv("PATH", _fake_nvidia_smi(tmp_path / "bin", 8))
    monkeypatch.setenv("HELICAL_AIRFLOW_GPU_LOCK_DIR", str(tmp_path / "leases"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,2")
    env = tmp_path / "env" / "bin"
    env.mkdir(parents=True)
    (env / "python").write_text("")
    seen = tmp_path / "seen"
    seen.mkdir()
    runner = env / "helical-airflow"  # runner_program() runs this script of the runner environment
    runner.write_text(
        f'#!/bin/sh\necho "${{CUDA_VISIBLE_DEVICES-unset}} ${{HELICAL_AIRFLOW_GPU_ID-unset}}" > {seen}/$$\nsleep 1\n'
    )
    runner.chmod(0o755)

    def launch(plan: str) -> None:
        with pytest.raises(LaunchError, match="E512"):  # the stand-in embeds nothing
            run_local(plan, [0], python=str(env / "python"), emit=lambda _: None)

    groups = [threading.Thread(target=launch, args=(_plan(tmp_path, "auto"),)) for _ in range(2)]
    for group in groups:
        group.start()
    for group in groups:
        group.join(timeout=60)
    pinned = sorted(p.read_text().split() for p in seen.iterdir())
    assert pinned == [["2", "2"], ["5", "5"]], pinned  # (CUDA_VISIBLE_DEVICES, HELICAL_AIRFLOW_GPU_ID) per group
    for p in seen.iterdir():
        p.unlink()
    launch(_plan(tmp_path, "cpu"))
    assert [p.read_text().split() for p in seen.iterdir()] == [["5,2", "unset"]]  # the worker's own, untouched


def test_the_docker_launcher_asks_for_the_leased_gpu_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("airflow.providers.docker", reason="the docker provider comes with the airflow extra")
    from helical_airflow.launchers import docker

    cfg = docker.DockerSettings(image="runner:test", gpu_image="runner:test-cuda")
    op = docker.docker_operator(_plan(tmp_path, "cuda"), [0], cfg, gpu_device="2")
    assert [(r["DeviceIDs"], r["Count"]) for r in op.device_requests] == [(["2"], 0)]  # as `docker run --gpus device=2`
    assert op.device_requests[0]["Capabilities"] == [["gpu"]]
    assert op.environment["HELICAL_AIRFLOW_GPU_ID"] == "2"  # inside, that GPU is device 0: the manifest records 2
    everything = docker.docker_operator(_plan(tmp_path, "cuda"), [0], cfg)  # no lease (no GPU detected): all
    assert [r["Count"] for r in everything.device_requests] == [-1]
    assert "HELICAL_AIRFLOW_GPU_ID" not in everything.environment

    monkeypatch.setenv("HELICAL_AIRFLOW_GPUS", "2")
    monkeypatch.setenv("HELICAL_AIRFLOW_GPU_LOCK_DIR", str(tmp_path / "leases"))
    with docker._gpu_lease(_plan(tmp_path, "cuda"), cfg, lambda _: None) as first:
        with docker._gpu_lease(_plan(tmp_path, "cuda"), cfg, lambda _: None) as second:
            assert {first, second} == {"0", "1"}
        with docker._gpu_lease(_plan(tmp_path, "cpu"), cfg, lambda _: None) as cpu:
            assert cpu is None
    monkeypatch.setenv("HELICAL_AIRFLOW_DOCKER_GPUS", "all")
    with docker._gpu_lease(_plan(tmp_path, "cuda"), docker.DockerSettings.from_env(), lambda _: None) as every:
        assert every is None  # every GPU asked for: nothing leased, count=-1


def test_the_gpu_pool_and_worker_slots_follow_the_gpu_count(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from helical_airflow.stack.config import StackConfig

    monkeypatch.delenv("HELICAL_STACK_GPU_POOL_SLOTS", raising=False)
    monkeypatch.delenv("HELICAL_STACK_WORKER_CONCURRENCY", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("HELICAL_AIRFLOW_GPUS", "auto")
    monkeypatch.setenv("PATH", _fake_nvidia_smi(tmp_path / "bin", 4))
    cfg = StackConfig.from_env(state_dir=tmp_path)
    assert (cfg.gpu_pool_slots, cfg.worker_concurrency) == (4, 4)
    monkeypatch.setenv("HELICAL_AIRFLOW_GPUS", "0")  # a CPU machine: one slot, the worker's usual 2 tasks
    cfg = StackConfig.from_env(state_dir=tmp_path)
    assert (cfg.gpu_pool_slots, cfg.worker_concurrency) == (1, 2)
    monkeypatch.setenv("HELICAL_STACK_GPU_POOL_SLOTS", "3")  # set by hand: kept
    assert StackConfig.from_env(state_dir=tmp_path).gpu_pool_slots == 3


def test_a_second_worker_shares_only_broker_database_and_outputs(tmp_path: Path) -> None:
    from helical_airflow.stack.config import StackConfig
    from helical_airflow.stack.secrets import load_or_create
    from helical_airflow.stack.services import airflow_services

    cfg = StackConfig.from_env(state_dir=tmp_path / "state", cache_dir=str(tmp_path / "cache1"), workers=2,
                               output_dir=tmp_path / "outputs")  # fmt: skip
    secrets, _ = load_or_create(cfg.secrets_file)
    services = {s.name: s for s in airflow_services(cfg, secrets)}
    one, two = services["worker"], services["worker-2"]
    e1, e2 = one.env or {}, two.env or {}
    shared = ("AIRFLOW__CELERY__BROKER_URL", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "HELICAL_AIRFLOW_OUTPUT_DIR",
              "HELICAL_AIRFLOW_GPU_LOCK_DIR")  # the same machine's GPUs: one set of leases  # fmt: skip
    assert all(e1[k] == e2[k] for k in shared)
    own = ("AIRFLOW_HOME", "HELICAL_AIRFLOW_CACHE_DIR", "HELICAL_AIRFLOW_WORKER_CACHE_DIR", "AIRFLOW__LOGGING__"
           "WORKER_LOG_SERVER_PORT")  # fmt: skip
    assert all(e1.get(k) != e2.get(k) for k in own), [(k, e1.get(k), e2.get(k)) for k in own]
    assert e2["HELICAL_AIRFLOW_CACHE_DIR"] == str(cfg.state_dir / "worker-2" / "cache")
    assert two.cwd == cfg.state_dir / "worker-2" and two.port != one.port
    node = two.argv[two.argv.index("--celery-hostname") + 1]
    assert node != one.argv[one.argv.index("--celery-hostname") + 1] and node.startswith("helical-stack-2@")


def test_an_embed_process_reads_the_weights_from_its_workers_own_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from helical_airflow.embed import shard_cache_dir
    from helical_airflow.models.cache import models_dir
    from helical_airflow.plan import load_plan

    plan = load_plan(_plan(tmp_path, "cpu", weights={"geneformer/model.safetensors": hashlib.sha256(b"w").hexdigest()}))
    monkeypatch.delenv("HELICAL_AIRFLOW_WORKER_CACHE_DIR", raising=False)
    assert shard_cache_dir(plan) == plan.params.cache_dir  # no cache of its own: the plan's
    own = tmp_path / "worker2-cache"
    monkeypatch.setenv("HELICAL_AIRFLOW_WORKER_CACHE_DIR", str(own))
    with pytest.raises(ConfigError) as err:
        shard_cache_dir(plan)
    assert err.value.code == "E532" and "geneformer/model.safetensors" in err.value.message
    (models_dir(str(own)) / "geneformer").mkdir(parents=True)
    (models_dir(str(own)) / "geneformer" / "model.safetensors").write_bytes(b"w")
    assert shard_cache_dir(plan) == str(own)
