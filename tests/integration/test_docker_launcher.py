"""The docker launcher for real: Airflow's DockerOperator (docker-py) against podman's Docker-API socket,
with an image built without a registry (scripts/podman_service.sh, scripts/podman_image.sh; ENTRYPOINT
helical-airflow, like the runner image). The shard runs in a container, reads the input mounted read-only,
writes its shard on the outputs mount; exit code and logs come back."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("airflow.providers.docker")
pytestmark = [pytest.mark.slow, pytest.mark.podman]

REPO = Path(__file__).resolve().parents[2]
IMAGE = "helical-airflow-runner:podman-test"


@pytest.fixture(scope="module")
def engine() -> str:
    missing = [b for b in ("podman", "runc", "debootstrap") if shutil.which(b) is None]
    if missing or os.geteuid() != 0:
        pytest.skip(f"needs root and {', '.join(missing) or 'podman'} (apt-get install podman runc debootstrap)")
    url = subprocess.run([str(REPO / "scripts" / "podman_service.sh")], capture_output=True, text=True, check=True)
    subprocess.run([str(REPO / "scripts" / "podman_image.sh"), IMAGE], capture_output=True, text=True, check=True,
                   timeout=900)  # fmt: skip
    return url.stdout.strip()


@pytest.fixture()
def workspace(
    engine: str, tmp_path: Path, sample_h5ad: Path, fixture_cache: str, monkeypatch: pytest.MonkeyPatch
) -> dict:
    """A data folder with the sample and a plan in it, as a worker would have made them."""
    from helical_airflow.pipeline import prepare
    from helical_airflow.spec import RunParams

    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(sample_h5ad, data / "sample.h5ad")
    outputs = tmp_path / "outputs"  # its own folder, as in docker-compose.yml
    monkeypatch.setenv("HELICAL_AIRFLOW_DATA_DIR", str(data))
    monkeypatch.setenv("HELICAL_AIRFLOW_OUTPUT_DIR", str(outputs))
    params = RunParams(model="geneformer", shard_size=300, device="cpu", cache_dir=fixture_cache)
    plan = prepare(data / "sample.h5ad", params, outputs)
    # The run key is a content hash, so an earlier session's test on this machine used the same one: clear its
    # leftovers so the "removed after the run" assertions speak only of this run's containers.
    for container in _containers(engine, plan.run_key):
        container.remove(force=True)
    return {"data": data, "outputs": outputs, "plan": plan}


def _settings(url: str):  # type: ignore[no-untyped-def]
    from helical_airflow.launchers.docker import DockerSettings

    # the image has only system libraries: Python and the project's environment come in read-only
    return DockerSettings(
        image=IMAGE,
        docker_url=url,
        network="none",
        extra_mounts=[f"{sys.base_prefix}:{sys.base_prefix}:ro", f"{REPO}:{REPO}:ro"],
    )


def _containers(url: str, run_key: str) -> list:  # type: ignore[type-arg]
    import docker

    client = docker.DockerClient(base_url=url)
    return client.containers.list(all=True, filters={"label": f"helical_airflow.run_key={run_key}"})


def test_shard_runs_in_a_container_and_comes_back(engine: str, workspace: dict, capfd) -> None:  # type: ignore[no-untyped-def]
    from helical_airflow.launchers import launch

    plan = workspace["plan"]
    (result,) = launch("docker", str(plan.plan_file), [1], cfg=_settings(engine))
    assert result["index"] == 1 and result["start"] == 300 and result["cells"] == 300 and not result["reused"]
    assert result["host"] != socket.gethostname()  # embedded inside the container, not here
    shard = np.load(plan.shard_file(1))
    assert shard.shape[0] == 300 and np.isfinite(shard).all()
    # the container's output went through the operator's logger (the task log under Airflow)
    logged = capfd.readouterr().out
    assert "DockerOperator" in logged and "FIXTURE" in logged and "shard 1 embedded 300 cells" in logged
    assert _containers(engine, plan.run_key) == []  # removed on success
    assert plan.shard_file(1).is_relative_to(workspace["outputs"])  # on the outputs mount
    assert sorted(p.name for p in workspace["data"].iterdir()) == ["sample.h5ad"]  # nothing written to the inputs


def test_the_container_runs_the_entrypoint_with_inputs_read_only(engine: str, workspace: dict) -> None:
    from helical_airflow.launchers.docker import docker_operator

    plan = workspace["plan"]
    operator = docker_operator(str(plan.plan_file), [0], _settings(engine))
    operator.execute(context={})  # auto_remove "never": run_docker removes it after reading its status
    (container,) = _containers(engine, plan.run_key)
    try:
        attrs = container.attrs
        assert attrs["Config"]["Entrypoint"] == ["helical-airflow"]  # the image's entrypoint ...
        assert attrs["Config"]["Cmd"] == ["embed-shard", "--plan", str(plan.plan_file), "--shard", "0"]  # ... + args
        mounts = {m["Destination"]: m["RW"] for m in attrs["Mounts"]}
        assert mounts["/opt/data"] is False and mounts[str(workspace["data"])] is False  # inputs read-only
        assert mounts[str(workspace["outputs"])] is True  # outputs: their own writable mount
        assert attrs["State"]["ExitCode"] == 0
    finally:
        container.remove(force=True)
    assert np.load(plan.shard_file(0)).shape[0] == 300


def test_a_failing_container_reports_exit_code_and_error_and_is_removed(engine: str, workspace: dict) -> None:
    from helical_airflow.launchers import LaunchError
    from helical_airflow.launchers.docker import run_docker

    plan = workspace["plan"]
    with pytest.raises(LaunchError) as err:
        run_docker(str(plan.plan_file), [99], cfg=_settings(engine))  # no shard 99 in a 3-shard plan
    # the runner's own error (code and message) and exit code 2 (a user error: not retried)
    assert err.value.process_exit_code == 2 and not err.value.retryable
    assert "E208: shard 99 is not in this plan" in err.value.message
    assert _containers(engine, plan.run_key) == []  # removed on failure too
    assert not plan.shard_file(99).exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGALRM], ids=["killed", "timed-out"])
def test_a_killed_airflow_task_removes_its_container(engine: str, workspace: dict, sig: signal.Signals) -> None:
    """The embed task run as Airflow runs it (tests/task_process.py), killed as Airflow kills it once its
    container runs: SIGTERM (the UI, a worker shutdown: the task runner calls on_kill) or SIGALRM (the
    execution_timeout timer). The container is gone within the 5 s the supervisor allows before its SIGKILL."""
    from task_process import ESCALATION_S, TaskProcess  # tests/task_process.py

    plan = workspace["plan"]
    cfg = _settings(engine)
    options = {"image": cfg.image, "docker_url": cfg.docker_url, "network": cfg.network,
               "extra_mounts": cfg.extra_mounts}  # fmt: skip
    task = TaskProcess({"launcher": "docker", "plan": str(plan.plan_file), "shards": [2], "options": options})
    try:
        task.wait_for("running container",
                      lambda: [c for c in _containers(engine, plan.run_key) if c.status == "running"])  # fmt: skip
        killed_at = time.monotonic()
        assert task.kill_like_airflow(sig), f"the task outlived the supervisor's grace:\n{task.output[-3000:]}"
        while _containers(engine, plan.run_key) and time.monotonic() - killed_at < ESCALATION_S:
            time.sleep(0.1)
        assert _containers(engine, plan.run_key) == [], "the container outlived its task"
    finally:
        task.close()
        for container in _containers(engine, plan.run_key):
            container.remove(force=True)
    ended = "TaskKilled: [E516]" if sig == signal.SIGTERM else "AirflowTaskTimeout"
    assert f"task failed: {ended}" in task.output, task.output[-3000:]
    assert not plan.shard_file(2).exists()  # killed while its container was still starting
