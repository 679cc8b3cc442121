"""The kubernetes launcher's pods, without a cluster: built from the model's resource profile and the deployment's
settings, serialised by the kubernetes client's models and validated against the Kubernetes OpenAPI schemas
(kubernetes-validate, strict: an unknown field fails), as written by shard_pod and as KubernetesPodOperator
would send them."""

from __future__ import annotations

from pathlib import Path

import pytest

from helical_airflow.plan import resolve_params

pytest.importorskip("airflow.providers.cncf.kubernetes")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

from kubernetes.client import ApiClient  # noqa: E402

from helical_airflow.errors import HelicalAirflowError  # noqa: E402
from helical_airflow.launchers.kubernetes import pod_operator, shard_pod  # noqa: E402
from helical_airflow.models import get_model  # noqa: E402
from helical_airflow.plan import load_plan  # noqa: E402
from helical_airflow.settings import KubernetesSettings, kubernetes_settings  # noqa: E402
from helical_airflow.spec import InputSummary, Plan, RunParams  # noqa: E402

#: the oldest Kubernetes still supported by the big clouds when this was written, and the newest schema shipped
VERSIONS = ("1.30.0", kubernetes_validate.utils.latest_version())
GPU_MODEL = "tf_sapiens"
CPU_MODEL = "geneformer"


@pytest.fixture()
def folders(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HELICAL_AIRFLOW_DATA_DIR", "/opt/data")
    monkeypatch.setenv("HELICAL_AIRFLOW_OUTPUT_DIR", "/opt/outputs")


def _plan(tmp_path: Path, model: str, device: str = "auto") -> str:
    summary = InputSummary(path="/opt/data/x.h5ad", sha256="0" * 64, size_bytes=1, n_cells=10, n_genes=5,
                           x_source="X", x_format="csr", dtype="int32", gene_id_kind="symbol", genes_in_vocab=5,
                           vocab_overlap=1.0)  # fmt: skip
    plan = Plan(run_key="ab12cd34ef56ab78", dataset="x", out_dir="/opt/outputs/x/ab12cd34ef56ab78", input=summary,
                params=resolve_params(RunParams(model=model, device=device, cache_dir="/opt/helical-cache")),
                model_family="f",
                helical_model_name=model, fixture=True, weights_checksum="w", code_version="c", shards=[],
                created_at="now")  # fmt: skip
    path = tmp_path / f"{model}-{device}.json"
    path.write_text(plan.model_dump_json())
    return str(path)


def _validated(pod: object) -> dict:
    manifest = ApiClient().sanitize_for_serialization(pod)
    for version in VERSIONS:
        kubernetes_validate.validate(manifest, version, strict=True)  # raises ValidationError
    return manifest


def _deployment() -> KubernetesSettings:
    return KubernetesSettings(
        namespace="helical", image="registry.example/runner:0.1.0", gpu_image="registry.example/runner:0.1.0-cuda",
        data_pvc="inputs", output_pvc="results", cache_pvc="weights", node_selector={"pool": "cpu"},
        gpu_node_selector={"cloud.google.com/gke-accelerator": "nvidia-l4"},
        tolerations=[{"key": "spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"}],
        image_pull_secrets=["regcred"], service_account="helical-runner",
    )  # fmt: skip


def _pod(tmp_path: Path, model: str, shard: int = 3, device: str = "auto") -> dict:
    path = _plan(tmp_path, model, device)
    return _validated(shard_pod(load_plan(path), path, [shard], get_model(model).profile, _deployment()))


def test_a_gpu_models_pod_asks_for_a_gpu_on_a_gpu_node(folders: None, tmp_path: Path) -> None:
    profile = get_model(GPU_MODEL).profile
    assert profile.gpu == "required" and profile.queue == "gpu"
    pod = _pod(tmp_path, GPU_MODEL)
    (container,) = pod["spec"]["containers"]
    assert container["image"] == "registry.example/runner:0.1.0-cuda"
    assert container["args"] == ["embed-shard", "--plan", str(tmp_path / f"{GPU_MODEL}-auto.json"), "--shard", "3"]
    assert "command" not in container  # the image's ENTRYPOINT, helical-airflow
    memory = f"{int(profile.memory_cap_gb * 1024)}Mi"
    assert container["resources"]["limits"] == {"memory": memory, "nvidia.com/gpu": "1"}
    assert container["resources"]["requests"] == {"memory": memory, "cpu": "1", "nvidia.com/gpu": "1"}
    assert pod["spec"]["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert pod["spec"]["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["metadata"]["labels"]["helical-airflow/queue"] == "gpu"


def test_a_cpu_models_pod_asks_for_no_gpu(folders: None, tmp_path: Path) -> None:
    profile = get_model(CPU_MODEL).profile
    assert profile.gpu == "optional"
    pod = _pod(tmp_path, CPU_MODEL, shard=0, device="cpu")
    (container,) = pod["spec"]["containers"]
    assert container["image"] == "registry.example/runner:0.1.0"
    memory = f"{int(profile.memory_cap_gb * 1024)}Mi"
    assert container["resources"] == {"limits": {"memory": memory}, "requests": {"memory": memory, "cpu": "1"}}
    assert pod["spec"]["nodeSelector"] == {"pool": "cpu"}
    assert pod["spec"]["tolerations"] == [{"key": "spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"}]
    # asked for CUDA: the GPU pod, whatever the profile says
    cuda = _pod(tmp_path, CPU_MODEL, device="cuda")["spec"]["containers"][0]
    assert cuda["resources"]["limits"]["nvidia.com/gpu"] == "1" and cuda["image"].endswith("-cuda")


def test_a_predict_job_runs_predict_shard_in_the_same_pod(folders: None, tmp_path: Path) -> None:
    """The predict job's pod: the embed pod's resources, GPU and volumes, predict-shard as its command, its own name
    (an embed pod of the same shard may still be terminating) and a job label."""
    from helical_airflow.launchers import predict

    path = _plan(tmp_path, GPU_MODEL)
    job = predict("models:/helical-tf-cell_type/3", "k1")
    pod = _validated(shard_pod(load_plan(path), path, [3], get_model(GPU_MODEL).profile, _deployment(), job))
    embed = _pod(tmp_path, GPU_MODEL, shard=3)
    (container,), (embedded,) = pod["spec"]["containers"], embed["spec"]["containers"]
    assert container["args"] == ["predict-shard", "--plan", path, "--classifier", "models:/helical-tf-cell_type/3",
                                 "--shard", "3"]  # fmt: skip
    assert embedded["args"][0] == "embed-shard"
    assert {k: v for k, v in container.items() if k != "args"} == {k: v for k, v in embedded.items() if k != "args"}
    assert pod["metadata"]["name"] != embed["metadata"]["name"] and "predict3" in pod["metadata"]["name"]
    assert pod["metadata"]["labels"]["helical-airflow/job"] == "predict"


def test_inputs_are_read_only_and_the_plans_paths_resolve_in_the_pod(folders: None, tmp_path: Path) -> None:
    pod = _pod(tmp_path, CPU_MODEL)
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"] == {"claimName": "inputs", "readOnly": True}
    assert volumes["outputs"]["persistentVolumeClaim"] == {"claimName": "results"}
    assert volumes["weights"]["persistentVolumeClaim"] == {"claimName": "weights"}
    (container,) = pod["spec"]["containers"]
    mounts = {m["mountPath"]: (m["name"], m.get("readOnly", False)) for m in container["volumeMounts"]}
    assert mounts["/opt/data"] == ("data", True)  # where plan.json's input path lives
    assert mounts["/opt/outputs"] == ("outputs", False)  # where plan.json and the shards live
    assert mounts["/opt/helical-cache"] == ("weights", False)  # the plan's cache_dir
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["HELICAL_AIRFLOW_DATA_DIR"] == "/opt/data" and env["HELICAL_AIRFLOW_OUTPUT_DIR"] == "/opt/outputs"
    # non-root, nothing extra
    spec = pod["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] == 50000
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True,
    }  # fmt: skip
    assert spec["restartPolicy"] == "Never" and spec["automountServiceAccountToken"] is False
    assert spec["serviceAccountName"] == "helical-runner" and spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["metadata"]["namespace"] == "helical"


def test_the_operator_sends_the_same_pod(folders: None, tmp_path: Path) -> None:
    path = _plan(tmp_path, GPU_MODEL)
    operator = pod_operator(path, [1, 2], _deployment())
    assert operator.on_finish_action.value == "delete_pod" and operator.get_logs
    request = _validated(operator.build_pod_request_obj(dry_run=True))
    (container,) = request["spec"]["containers"]  # no xcom sidecar: the result is read from the outputs volume
    assert container["name"] == "base" and container["image"].endswith("-cuda")
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["args"][-4:] == ["--shard", "1", "--shard", "2"]
    assert request["metadata"]["namespace"] == "helical"
    assert {v["name"] for v in request["spec"]["volumes"]} == {"data", "outputs", "weights", "tmp"}


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert kubernetes_settings() == KubernetesSettings()  # the documented defaults
    monkeypatch.setenv("HELICAL_AIRFLOW_K8S_NAMESPACE", "ml")
    monkeypatch.setenv("HELICAL_AIRFLOW_K8S_GPU_NODE_SELECTOR", '{"nvidia.com/gpu.present": "true"}')
    monkeypatch.setenv("HELICAL_AIRFLOW_K8S_CACHE_PVC", "")
    monkeypatch.setenv("HELICAL_AIRFLOW_K8S_IN_CLUSTER", "false")
    monkeypatch.setenv("HELICAL_AIRFLOW_K8S_IMAGE_PULL_SECRETS", "a, b")
    cfg = kubernetes_settings()
    assert cfg.namespace == "ml" and cfg.gpu_node_selector == {"nvidia.com/gpu.present": "true"}
    assert cfg.cache_pvc is None and cfg.in_cluster is False and cfg.image_pull_secrets == ["a", "b"]
    monkeypatch.setenv("HELICAL_AIRFLOW_K8S_TOLERATIONS", '{"key": "not a list"}')
    with pytest.raises(HelicalAirflowError, match="E530"):
        kubernetes_settings()


def test_a_pod_without_a_cache_volume_is_still_valid(folders: None, tmp_path: Path) -> None:
    path = _plan(tmp_path, CPU_MODEL)
    cfg = KubernetesSettings(cache_pvc=None)
    pod = _validated(shard_pod(load_plan(path), path, [0], get_model(CPU_MODEL).profile, cfg))
    assert {v["name"] for v in pod["spec"]["volumes"]} == {"data", "outputs", "tmp"}
    assert "nodeSelector" not in pod["spec"]  # nothing configured: the scheduler decides


def test_a_killed_task_deletes_its_pod(folders: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Airflow calls the embed task's on_kill (EmbedShardOperator): that is the pod operator's own on_kill, which
    deletes the running pod, and the task ends with E516. No cluster here: the API client is a stand-in that
    records the call, and the pod operator's execute one that 'runs' the pod until it is deleted."""
    import threading

    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from airflow.sdk.exceptions import AirflowException

    from helical_airflow.launchers.base import TaskKilled
    from helical_airflow.launchers.kubernetes import run_kubernetes
    from helical_airflow.launchers.lifecycle import embed_task

    running, deleted = threading.Event(), threading.Event()
    calls: list[dict] = []
    started: list[str] = []

    class CoreV1Api:  # the one call KubernetesPodOperator.on_kill makes
        def delete_namespaced_pod(self, **kwargs: object) -> None:
            calls.append(kwargs)
            deleted.set()

    def execute(self: KubernetesPodOperator, context: object) -> None:
        started.append(self.name)
        self.pod = self.full_pod_spec  # what execute records once it has created the pod
        running.set()
        assert deleted.wait(30), "the pod was never deleted"
        raise AirflowException(f"Pod {self.name} returned a failure: {{'exit_code': 137, 'reason': 'Error'}}")

    monkeypatch.setattr(KubernetesPodOperator, "execute", execute)
    monkeypatch.setattr(KubernetesPodOperator, "client", property(lambda self: CoreV1Api()))
    path = _plan(tmp_path, CPU_MODEL)

    @embed_task(task_id="embed_shard")
    def embed_group(plan_path: str, shards: list[int]) -> list[dict]:
        try:
            return run_kubernetes(plan_path, shards, _deployment())
        finally:  # a recycled pod would come next: none may start once the task is killed
            with pytest.raises(TaskKilled, match="E516"):
                run_kubernetes(plan_path, [4], _deployment())

    task = embed_group(plan_path=path, shards=[3]).operator
    outcome: dict[str, BaseException] = {}

    def run() -> None:
        try:
            task.execute({"params": {}})
        except BaseException as exc:  # noqa: BLE001 (handed to the test thread)
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    assert running.wait(60)
    with pytest.raises(TaskKilled, match="E516") as killed:  # on_kill: what Airflow's SIGTERM handler calls
        task.on_kill()
    thread.join(30)
    pod_name = _pod(tmp_path, CPU_MODEL)["metadata"]["name"]
    assert f"pod helical/{pod_name}" in killed.value.message
    assert calls == [{"name": pod_name, "namespace": "helical"}]  # deleted, once
    assert isinstance(outcome.get("error"), TaskKilled)  # not E511: the shard did not fail, the task was killed
    assert started == [pod_name]  # and no pod after it
    task.on_kill()  # called again after the task ended (the timeout path): nothing left, nothing raised
    assert len(calls) == 1


def test_a_timed_out_task_deletes_its_starting_pod(
    folders: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """execution_timeout while the pod is starting: AirflowTaskTimeout passes through the pod operator, whose own
    clean-up skips a pod it has not read back yet; the launcher deletes it (the pod operator's on_kill)."""
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from airflow.sdk.exceptions import AirflowTaskTimeout

    from helical_airflow.launchers.kubernetes import run_kubernetes

    calls: list[dict] = []

    class CoreV1Api:
        def delete_namespaced_pod(self, **kwargs: object) -> None:
            calls.append(kwargs)

    def execute(self: KubernetesPodOperator, context: object) -> None:
        self.pod = self.full_pod_spec  # created, not yet running: KubernetesPodOperator's remote_pod is still None
        raise AirflowTaskTimeout("Timeout")  # what the execution_timeout timer raises in the task's main thread

    monkeypatch.setattr(KubernetesPodOperator, "execute", execute)
    monkeypatch.setattr(KubernetesPodOperator, "client", property(lambda self: CoreV1Api()))
    with pytest.raises(AirflowTaskTimeout):
        run_kubernetes(_plan(tmp_path, CPU_MODEL), [3], _deployment())
    assert calls == [{"name": _pod(tmp_path, CPU_MODEL)["metadata"]["name"], "namespace": "helical"}]
