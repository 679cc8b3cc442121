"""docker-compose.yml checked by Compose itself (`docker compose config`, no engine needed): the whole
stack, pinned images, healthchecks, the published ports, secrets generated into .env and required."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SERVICES = {
    "postgres", "redis", "airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
    "airflow-triggerer", "airflow-worker", "statsd-exporter", "prometheus", "alertmanager", "grafana", "cadvisor",
    "node-exporter", "loki", "promtail", "mlflow",
}  # fmt: skip


def _compose_command() -> list[str] | None:
    """`docker compose` (the CLI plugin), or the plugin's binary run standalone when there is no docker CLI."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    plugin = Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker")) / "cli-plugins" / "docker-compose"
    standalone = shutil.which("docker-compose") or (str(plugin) if plugin.is_file() else None)
    return [standalone] if standalone else None


COMPOSE = _compose_command()
pytestmark = pytest.mark.skipif(
    COMPOSE is None, reason="needs Compose v2: deploy/docker/install-compose.sh (scripts/test.sh runs it)"
)


def _config(env_file: Path, *profiles: str) -> subprocess.CompletedProcess[str]:
    assert COMPOSE is not None
    args = [*COMPOSE, "--env-file", str(env_file), "-f", str(REPO / "docker-compose.yml")]
    for profile in profiles:
        args += ["--profile", profile]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELICAL_WORKER_")}  # .env decides here
    return subprocess.run([*args, "config", "--format", "json"], capture_output=True, text=True, cwd=REPO, env=env)


@pytest.fixture(scope="module")
def env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("compose") / ".env"
    done = subprocess.run([str(REPO / "deploy" / "docker" / "init-env.sh")], capture_output=True, text=True,
                          env={**os.environ, "HELICAL_ENV_FILE": str(path)})  # fmt: skip
    assert done.returncode == 0, done.stderr
    return path


@pytest.fixture(scope="module")
def config(env_file: Path) -> dict:
    done = _config(env_file)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_generated_env_is_private_and_complete(env_file: Path) -> None:
    assert env_file.stat().st_mode & 0o777 == 0o600
    values = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line and line[0] != "#")
    secrets = [k for k in values if k.endswith(("PASSWORD", "SECRET", "SECRET_KEY", "FERNET_KEY"))]
    assert len(secrets) >= 7
    assert all(len(values[k]) >= 16 and values[k] != "admin" for k in secrets)
    # a second run never overwrites the secrets
    before = env_file.read_text()
    subprocess.run([str(REPO / "deploy" / "docker" / "init-env.sh")], capture_output=True, check=True,
                   env={**os.environ, "HELICAL_ENV_FILE": str(env_file)})  # fmt: skip
    assert env_file.read_text() == before


def test_compose_refuses_to_start_without_secrets(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    done = _config(empty)
    assert done.returncode != 0 and "init-env.sh" in done.stderr


def test_whole_stack_pinned_and_health_checked(config: dict) -> None:
    services = config["services"]
    assert set(services) >= SERVICES
    for name, service in services.items():
        image = service["image"]
        tag = image.rsplit(":", 1)[-1] if ":" in image.split("/")[-1] else ""
        assert tag and tag != "latest", f"{name}: image {image} is not pinned"
        if name != "airflow-init":
            assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_published_ports(config: dict) -> None:
    def ports(name: str) -> set[tuple[str, int, str]]:
        published = config["services"][name].get("ports", [])
        return {(p["published"], p["target"], p.get("protocol", "tcp")) for p in published}

    assert ("8080", 8080, "tcp") in ports("airflow-apiserver")
    assert {("9102", 9102, "tcp"), ("9125", 9125, "udp")} <= ports("statsd-exporter")
    assert ("9090", 9090, "tcp") in ports("prometheus")
    assert ("9093", 9093, "tcp") in ports("alertmanager")
    assert ("3000", 3000, "tcp") in ports("grafana")
    assert ("8081", 8080, "tcp") in ports("cadvisor")
    assert ("9100", 9100, "tcp") in ports("node-exporter")


def test_airflow_sends_statsd_and_shares_the_local_stacks_settings(config: dict, env_file: Path) -> None:
    from helical_airflow.stack.airflow_env import SHARED_ENV_FILE, read_env_file

    env = config["services"]["airflow-scheduler"]["environment"]
    for key, value in read_env_file(SHARED_ENV_FILE).items():
        assert env[key] == value  # the same airflow/config/airflow.env as the local stack
    assert env["AIRFLOW__METRICS__STATSD_ON"] == "True"
    assert env["AIRFLOW__METRICS__STATSD_HOST"] == "statsd-exporter" and env["AIRFLOW__METRICS__STATSD_PORT"] == "9125"
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    secrets = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if line.startswith("POSTGRES_"))
    assert secrets["POSTGRES_PASSWORD"] in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    mapping = {m["target"]: m["source"] for m in config["services"]["statsd-exporter"]["volumes"]}
    assert mapping["/etc/statsd/mapping.yml"].endswith("monitoring/statsd/mapping.yml")
    prom = {m["target"]: m["source"] for m in config["services"]["prometheus"]["volumes"] if m["type"] == "bind"}
    assert prom["/etc/prometheus/rules"].endswith("monitoring/rules")


def test_gpu_worker_serves_the_gpu_queue_with_a_device_reservation(env_file: Path) -> None:
    done = _config(env_file, "gpu")
    assert done.returncode == 0, done.stderr
    gpu = json.loads(done.stdout)["services"]["airflow-worker-gpu"]
    assert gpu["command"][-2:] == ["--queues", "gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]


def test_mounted_config_files_exist(config: dict) -> None:
    for name, service in config["services"].items():
        for volume in service.get("volumes", []):
            if volume["type"] == "bind" and volume["source"].startswith(str(REPO)):
                assert Path(volume["source"]).exists(), f"{name} mounts missing {volume['source']}"


def _memory_limit(service: dict) -> int:
    return int(service.get("deploy", {}).get("resources", {}).get("limits", {}).get("memory") or 0)


def test_every_worker_the_memory_alert_watches_has_a_memory_limit(env_file: Path, tmp_path: Path) -> None:
    # WorkerMemoryNearLimit divides cAdvisor's working set by container_spec_memory_limit_bytes, which cAdvisor
    # reports as 0 for a container without a limit (the rule skips those): no limit, no alert.
    rules = yaml.safe_load((REPO / "monitoring" / "rules" / "infrastructure.rules.yml").read_text())
    (expr,) = [r["expr"] for g in rules["groups"] for r in g["rules"] if r.get("alert") == "WorkerMemoryNearLimit"]
    assert "container_spec_memory_limit_bytes" in expr
    (pattern,) = set(re.findall(r'name=~"([^"]+)"', expr))
    done = _config(env_file, "gpu")
    assert done.returncode == 0, done.stderr
    config = json.loads(done.stdout)
    # Compose names a service's containers <project>-<service>-<n>; cAdvisor's `name` label is that name
    watched = {n for n in config["services"] if re.fullmatch(pattern, f"{config['name']}-{n}-1")}
    assert watched == {"airflow-worker", "airflow-worker-gpu"}
    assert {n: _memory_limit(config["services"][n]) for n in watched} == {
        "airflow-worker": 16 * 2**30, "airflow-worker-gpu": 48 * 2**30,
    }  # fmt: skip

    # the limits come from .env (HELICAL_WORKER_MEMORY, HELICAL_WORKER_GPU_MEMORY) ...
    custom = tmp_path / "custom.env"
    text = re.sub(r"(?m)^HELICAL_WORKER_MEMORY=.*$", "HELICAL_WORKER_MEMORY=3g", env_file.read_text())
    custom.write_text(re.sub(r"(?m)^HELICAL_WORKER_GPU_MEMORY=.*$", "HELICAL_WORKER_GPU_MEMORY=5g", text))
    done = _config(custom, "gpu")
    assert done.returncode == 0, done.stderr
    services = json.loads(done.stdout)["services"]
    assert (_memory_limit(services["airflow-worker"]), _memory_limit(services["airflow-worker-gpu"])) == (
        3 * 2**30, 5 * 2**30,
    )  # fmt: skip
    # ... with the same defaults when .env predates them
    old = tmp_path / "old.env"
    old.write_text(re.sub(r"(?m)^HELICAL_WORKER_(GPU_)?MEMORY=.*\n", "", env_file.read_text()))
    assert "HELICAL_WORKER_MEMORY" not in old.read_text()
    done = _config(old, "gpu")
    assert done.returncode == 0, done.stderr
    services = json.loads(done.stdout)["services"]
    assert _memory_limit(services["airflow-worker"]) == 16 * 2**30
    assert _memory_limit(services["airflow-worker-gpu"]) == 48 * 2**30
