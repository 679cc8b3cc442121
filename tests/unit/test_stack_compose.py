"""docker-compose.yml checked by Compose itself (`docker compose config`, no engine needed), as a new user gets it
(deploy/docker/init-env.sh first): the whole stack, pinned images, healthchecks, ports on 127.0.0.1, inputs
read-only, secrets as Compose secrets only, no Docker socket in Airflow, the init's folder ownership (for real,
with uid 1000 writing a folder laid out like the image's)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
INIT_ENV = REPO / "deploy" / "docker" / "init-env.sh"
AIRFLOW_INIT = REPO / "deploy" / "docker" / "airflow-init.sh"
DOCKERFILE = REPO / "deploy" / "docker" / "Dockerfile"
SERVICES = {
    "postgres", "redis", "airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
    "airflow-triggerer", "airflow-worker", "statsd-exporter", "prometheus", "alertmanager", "grafana", "cadvisor",
    "node-exporter", "loki", "promtail", "mlflow",
}  # fmt: skip
AIRFLOW = {
    "airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
    "airflow-worker", "airflow-worker-gpu",
}  # fmt: skip
SECRET_FILES = {"postgres_password", "redis_password", "airflow_admin_password", "airflow_fernet_key",
                "airflow_jwt_secret", "airflow_api_secret_key", "grafana_admin_password"}  # fmt: skip


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
    # .env decides here, not this shell's variables
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HELICAL_", "AIRFLOW_", "DOCKER_SOCKET"))}
    return subprocess.run([*args, "config", "--format", "json"], capture_output=True, text=True, cwd=REPO, env=env)


def _config_json(env_file: Path, *profiles: str) -> dict:
    done = _config(env_file, *profiles)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _init_env(env_file: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HELICAL_SECRETS_DIR"}
    return subprocess.run(
        [str(INIT_ENV)], capture_output=True, text=True, env={**env, "HELICAL_ENV_FILE": str(env_file)}
    )


def _read_env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and line[0] != "#")


@pytest.fixture(scope="module")
def env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("compose") / ".env"
    done = _init_env(path)
    assert done.returncode == 0, done.stderr
    return path


@pytest.fixture(scope="module")
def secrets(env_file: Path) -> dict[str, str]:
    folder = Path(_read_env(env_file)["HELICAL_SECRETS_DIR"])
    return {p.name: p.read_text() for p in folder.iterdir()}


@pytest.fixture(scope="module")
def config(env_file: Path) -> dict:
    return _config_json(env_file)


@pytest.fixture(scope="module")
def full(env_file: Path) -> dict:
    """Every service that runs (profiles gpu and docker; `build` only builds images)."""
    return _config_json(env_file, "gpu", "docker")


def test_generated_env_is_private_and_has_no_secret_while_secrets_are_files(env_file: Path, secrets: dict) -> None:
    assert env_file.stat().st_mode & 0o777 == 0o600
    values = _read_env(env_file)
    assert not [k for k in values if k.endswith(("PASSWORD", "SECRET", "SECRET_KEY", "FERNET_KEY"))]
    assert values["AIRFLOW_UID"] == str(os.getuid() or 50000)  # root on the host: the image's user, never 0
    folder = Path(values["HELICAL_SECRETS_DIR"])
    assert folder.stat().st_mode & 0o777 == 0o700
    assert set(secrets) >= SECRET_FILES
    assert all(len(secrets[k]) >= 16 and secrets[k] != "admin" for k in SECRET_FILES)
    assert len(set(secrets[k] for k in SECRET_FILES)) == len(SECRET_FILES)  # all different
    assert secrets["redis.conf"].splitlines()[0] == f"requirepass {secrets['redis_password']}"
    assert f":{secrets['postgres_password']}@postgres:5432/" in secrets["airflow_sql_alchemy_conn"]
    # a second run never overwrites anything
    before = env_file.read_text(), dict(secrets)
    assert _init_env(env_file).returncode == 0
    assert (env_file.read_text(), {p.name: p.read_text() for p in folder.iterdir()}) == before


def test_an_older_env_keeps_its_passwords_and_gets_the_new_settings(tmp_path: Path) -> None:
    old = tmp_path / ".env"  # as the previous init-env.sh wrote it: secrets in .env, no outputs or secrets folder
    old.write_text("AIRFLOW_UID=1234\nHELICAL_HOST_DATA_DIR=/srv/data\nPOSTGRES_PASSWORD=pg-of-the-existing-volume\n"
                   "REDIS_PASSWORD=redis-old-password\nAIRFLOW_ADMIN_PASSWORD=admin-old-password\n")  # fmt: skip
    done = _init_env(old)
    assert done.returncode == 0, done.stderr
    values = _read_env(old)
    assert values["AIRFLOW_UID"] == "1234" and values["HELICAL_HOST_DATA_DIR"] == "/srv/data"  # kept
    assert values["HELICAL_HOST_OUTPUT_DIR"] and values["HELICAL_BIND_ADDRESS"] == "127.0.0.1"  # added
    assert "POSTGRES_PASSWORD" not in values and "REDIS_PASSWORD" not in values  # moved ...
    folder = Path(values["HELICAL_SECRETS_DIR"])
    assert (folder / "postgres_password").read_text() == "pg-of-the-existing-volume"  # ... with the same values
    assert (folder / "airflow_admin_password").read_text() == "admin-old-password"
    assert _config(old).returncode == 0


def test_compose_refuses_to_start_without_init_env(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    done = _config(empty)
    assert done.returncode != 0 and "init-env.sh" in done.stderr


def test_whole_stack_pinned_and_health_checked(full: dict) -> None:
    services = full["services"]
    assert set(services) >= SERVICES | {"airflow-worker-gpu", "docker-socket-proxy"}
    for name, service in services.items():
        image = service["image"]
        tag = image.rsplit(":", 1)[-1] if ":" in image.split("/")[-1] else ""
        assert tag and tag != "latest", f"{name}: image {image} is not pinned"
        if name != "airflow-init":
            assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def _ports(service: dict) -> set[tuple[str, str, int, str]]:
    return {
        (p.get("host_ip", ""), p["published"], p["target"], p.get("protocol", "tcp")) for p in service.get("ports", [])
    }


def test_every_port_is_published_on_localhost_only(full: dict, env_file: Path, tmp_path: Path) -> None:
    published = {name: _ports(s) for name, s in full["services"].items() if s.get("ports")}
    assert ("127.0.0.1", "8080", 8080, "tcp") in published["airflow-apiserver"]
    assert {("127.0.0.1", "9102", 9102, "tcp"), ("127.0.0.1", "9125", 9125, "udp")} <= published["statsd-exporter"]
    assert ("127.0.0.1", "9090", 9090, "tcp") in published["prometheus"]
    assert ("127.0.0.1", "9093", 9093, "tcp") in published["alertmanager"]
    assert ("127.0.0.1", "3000", 3000, "tcp") in published["grafana"]
    assert ("127.0.0.1", "8081", 8080, "tcp") in published["cadvisor"]
    assert ("127.0.0.1", "9100", 9100, "tcp") in published["node-exporter"]
    assert ("127.0.0.1", "3100", 3100, "tcp") in published["loki"]
    assert ("127.0.0.1", "5000", 5000, "tcp") in published["mlflow"]
    every = [port for ports in published.values() for port in ports]
    assert len(every) >= 10 and {port[0] for port in every} == {"127.0.0.1"}  # no port on all interfaces
    assert "docker-socket-proxy" not in published and "postgres" not in published and "redis" not in published
    # the user opens them on purpose, in .env
    wide = tmp_path / "wide.env"
    wide.write_text(env_file.read_text().replace("HELICAL_BIND_ADDRESS=127.0.0.1", "HELICAL_BIND_ADDRESS=10.1.2.3"))
    ports = _ports(_config_json(wide)["services"]["airflow-apiserver"])
    assert ports == {("10.1.2.3", "8080", 8080, "tcp")}


def test_prometheus_cannot_be_shut_down_over_http(full: dict) -> None:
    command = full["services"]["prometheus"]["command"]
    assert not [arg for arg in command if "lifecycle" in arg or "admin-api" in arg]


def _mounts(service: dict) -> dict[str, dict]:
    return {m["target"]: m for m in service.get("volumes", [])}


def test_inputs_are_read_only_everywhere_and_outputs_have_their_own_mount(
    env_file: Path, full: dict, tmp_path: Path
) -> None:
    services = {**full["services"], **_config_json(env_file, "build")["services"]}  # + the runner images' services
    readers = {name for name, s in services.items() if "/opt/data" in _mounts(s)}
    assert readers >= AIRFLOW | {"runner", "runner-cuda"}
    values = _read_env(env_file)
    for name in readers:
        data = _mounts(services[name])["/opt/data"]
        assert data["read_only"] is True, f"{name} mounts the inputs writable"
        assert data["source"] == values["HELICAL_HOST_DATA_DIR"]
        writable = {
            t for t, m in _mounts(services[name]).items() if t.startswith("/opt/data/") and not m.get("read_only")
        }
        # the one exception: the drop folder, where the watcher's claim task (on the default worker) moves files
        assert writable == ({"/opt/data/incoming"} if name == "airflow-worker" else set()), name
    for name in AIRFLOW:
        env = services[name]["environment"]
        assert env["HELICAL_AIRFLOW_DATA_DIR"] == "/opt/data" and env["HELICAL_AIRFLOW_OUTPUT_DIR"] == "/opt/outputs"
        outputs = _mounts(services[name])["/opt/outputs"]
        assert not outputs.get("read_only") and outputs["source"] == values["HELICAL_HOST_OUTPUT_DIR"]
        assert env["HELICAL_AIRFLOW_HOST_OUTPUT_DIR"] == outputs["source"]  # runner containers mount the same


def test_no_airflow_service_sees_the_docker_socket(env_file: Path, full: dict) -> None:
    def host_sources(service: dict) -> list[str]:
        return [m["source"] for m in service.get("volumes", []) if m["type"] == "bind"]

    socket = "/var/run/docker.sock"
    for name, service in full["services"].items():
        for source in host_sources(service):
            reaches = source == socket or socket.startswith(source.rstrip("/") + "/") or source == "/"
            if name == "docker-socket-proxy":
                continue
            if name in ("cadvisor", "node-exporter"):  # privileged host agents: they read the host's root by design
                continue
            assert not reaches and "docker.sock" not in source, f"{name} mounts {source}"
    proxy = full["services"]["docker-socket-proxy"]
    assert proxy["profiles"] == ["docker"]  # opt-in
    assert "docker-socket-proxy" not in _config_json(env_file)["services"]  # not in the default stack
    assert _mounts(proxy)["/var/run/docker.sock"]["source"] == socket
    # only the container and image endpoints (POST: create, start, wait, remove); exec, volumes, ... refused
    granted = {k for k, v in proxy["environment"].items() if v == "1"}
    assert granted == {"CONTAINERS", "IMAGES", "POST"}
    assert {"EXEC", "VOLUMES", "NETWORKS", "BUILD", "AUTH", "SECRETS", "SYSTEM"} <= set(proxy["environment"])
    assert list(proxy["networks"]) == ["docker-api"] and full["networks"]["docker-api"]["internal"] is True
    for name in ("airflow-worker", "airflow-worker-gpu"):
        service = full["services"][name]
        assert service["environment"]["HELICAL_AIRFLOW_DOCKER_URL"] == "tcp://docker-socket-proxy:2375"
        assert "docker-api" in service["networks"] and "group_add" not in service


def test_no_secret_value_anywhere_in_the_configuration(full: dict, secrets: dict) -> None:
    text = json.dumps(full)  # commands, entrypoints, healthchecks, environments: what `docker inspect` shows
    for name, value in secrets.items():
        for part in {value, *value.split()} - {"requirepass", "save", '""'}:
            assert part not in text, f"the value of secret {name} is in the compose configuration"
    services = full["services"]
    # each consumer reads its secret from a Compose secret mount (*_FILE / *_CMD / a config file)
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert (
        services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin_password"
    )
    assert services["redis"]["command"] == ["redis-server", "/run/secrets/redis.conf"]
    for name, service in services.items():
        mounted = {s["target"] for s in service.get("secrets", [])}
        used = set(re.findall(r"/run/secrets/[\w.]+", json.dumps(service)))
        assert used <= mounted, f"{name} reads secrets it does not mount: {used - mounted}"
        env = service.get("environment") or {}
        if name in AIRFLOW:
            for key in ("DATABASE__SQL_ALCHEMY_CONN", "CELERY__BROKER_URL", "CELERY__RESULT_BACKEND",
                        "CORE__FERNET_KEY", "API_AUTH__JWT_SECRET", "API__SECRET_KEY"):  # fmt: skip
                assert f"AIRFLOW__{key}" not in env and env[f"AIRFLOW__{key}_CMD"].startswith("cat /run/secrets/")
    for secret in full["secrets"].values():
        assert Path(secret["file"]).parent == Path(next(iter(full["secrets"].values()))["file"]).parent


def test_airflow_sends_statsd_and_shares_the_local_stacks_settings(config: dict) -> None:
    from helical_airflow.stack.airflow_env import SHARED_ENV_FILE, read_env_file

    env = config["services"]["airflow-scheduler"]["environment"]
    for key, value in read_env_file(SHARED_ENV_FILE).items():
        assert env[key] == value  # the same airflow/config/airflow.env as the local stack
    assert env["AIRFLOW__METRICS__STATSD_ON"] == "True"
    assert env["AIRFLOW__METRICS__STATSD_HOST"] == "statsd-exporter" and env["AIRFLOW__METRICS__STATSD_PORT"] == "9125"
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    mapping = {m["target"]: m["source"] for m in config["services"]["statsd-exporter"]["volumes"]}
    assert mapping["/etc/statsd/mapping.yml"].endswith("monitoring/statsd/mapping.yml")
    prom = {m["target"]: m["source"] for m in config["services"]["prometheus"]["volumes"] if m["type"] == "bind"}
    assert prom["/etc/prometheus/rules"].endswith("monitoring/rules")


def test_workers_shut_down_warm_and_wait_for_the_api_server(full: dict) -> None:
    for name in ("airflow-worker", "airflow-worker-gpu"):
        service = full["services"][name]
        assert service["environment"]["DUMB_INIT_SETSID"] == "0"  # dumb-init signals the Celery worker only
        assert service["depends_on"]["airflow-apiserver"]["condition"] == "service_healthy"
        assert service["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"


def test_gpu_worker_serves_the_gpu_queue_with_a_device_reservation(full: dict) -> None:
    gpu = full["services"]["airflow-worker-gpu"]
    assert gpu["command"][-2:] == ["--queues", "gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    assert gpu["build"]["args"]["TORCH_INDEX_URL"].endswith("/cu128")


def test_runner_images_cpu_and_cuda_and_the_launcher_picks_by_shard(env_file: Path) -> None:
    services = _config_json(env_file, "build")["services"]
    cpu, cuda = services["runner"], services["runner-cuda"]
    assert cpu["build"]["target"] == cuda["build"]["target"] == "runner"
    assert cpu["build"]["args"]["TORCH_INDEX_URL"].endswith("/cpu")
    assert cuda["build"]["args"]["TORCH_INDEX_URL"].endswith("/cu128")
    env = services["airflow-worker"]["environment"]
    assert (env["HELICAL_AIRFLOW_DOCKER_IMAGE"], env["HELICAL_AIRFLOW_DOCKER_GPU_IMAGE"]) == (
        cpu["image"],
        cuda["image"],
    )


def test_mounted_config_files_exist(full: dict) -> None:
    for name, service in full["services"].items():
        for volume in service.get("volumes", []):
            if volume["type"] == "bind" and volume["source"].startswith(str(REPO / "monitoring")):
                assert Path(volume["source"]).exists(), f"{name} mounts missing {volume['source']}"
    for name, secret in full["secrets"].items():
        assert Path(secret["file"]).is_file(), f"init-env.sh did not write secret {name}"


def _memory_limit(service: dict) -> int:
    return int(service.get("deploy", {}).get("resources", {}).get("limits", {}).get("memory") or 0)


def test_every_worker_the_memory_alert_watches_has_a_memory_limit(env_file: Path, tmp_path: Path) -> None:
    # WorkerMemoryNearLimit divides cAdvisor's working set by container_spec_memory_limit_bytes, which cAdvisor
    # reports as 0 for a container without a limit (the rule skips those): no limit, no alert.
    rules = yaml.safe_load((REPO / "monitoring" / "rules" / "infrastructure.rules.yml").read_text())
    (expr,) = [r["expr"] for g in rules["groups"] for r in g["rules"] if r.get("alert") == "WorkerMemoryNearLimit"]
    assert "container_spec_memory_limit_bytes" in expr
    (pattern,) = set(re.findall(r'name=~"([^"]+)"', expr))
    config = _config_json(env_file, "gpu")
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
    services = _config_json(custom, "gpu")["services"]
    assert (_memory_limit(services["airflow-worker"]), _memory_limit(services["airflow-worker-gpu"])) == (
        3 * 2**30, 5 * 2**30,
    )  # fmt: skip
    # ... with the same defaults when .env predates them
    old = tmp_path / "old.env"
    old.write_text(re.sub(r"(?m)^HELICAL_WORKER_(GPU_)?MEMORY=.*\n", "", env_file.read_text()))
    assert "HELICAL_WORKER_MEMORY" not in old.read_text()
    services = _config_json(old, "gpu")["services"]
    assert _memory_limit(services["airflow-worker"]) == 16 * 2**30
    assert _memory_limit(services["airflow-worker-gpu"]) == 48 * 2**30


# --- the init's folder ownership, for real ------------------------------------------------------------------------


def _init_dirs() -> list[str]:
    (default,) = re.findall(r'dirs="\$\{HELICAL_INIT_DIRS:-([^}]+)\}"', AIRFLOW_INIT.read_text())
    return default.split()


def test_the_init_runs_as_root_and_owns_every_folder_airflow_writes(full: dict) -> None:
    init = full["services"]["airflow-init"]
    assert init["user"] == "0:0" and init["command"] == ["/opt/helical-airflow/airflow-init.sh"]
    assert init["environment"]["AIRFLOW_UID"] == full["services"]["airflow-scheduler"]["user"].split(":")[0]
    assert (
        "COPY --chmod=0755 deploy/docker/airflow-init.sh /opt/helical-airflow/airflow-init.sh" in DOCKERFILE.read_text()
    )
    owned = set(_init_dirs())
    for name in AIRFLOW - {"airflow-init"}:
        service = full["services"][name]
        assert service["user"].endswith(":0")  # any uid, group 0: the official image's convention
        writable = {t for t, m in _mounts(service).items() if not m.get("read_only") and t != "/opt/data/incoming"}
        assert writable <= owned, f"{name} writes {writable - owned}, which airflow-init does not own"
        assert writable <= set(_mounts(init)) | {"/opt/airflow/secrets"}


def _image_layout() -> list[tuple[int, int, int, str]]:
    """(mode, uid, gid, path) of the folders the airflow stage of the Dockerfile creates (`install -d ...`)."""
    stage = DOCKERFILE.read_text().split(" AS airflow\n", 1)[1].split(" AS airflow-worker", 1)[0]
    assert "USER 50000:0" in stage  # the image's airflow user
    uids = {"airflow": 50000}
    layout = []
    for mode, owner, group, paths in re.findall(r"install -d -m (\d+) -o (\S+) -g (\d+) ([^\n\\&]+)", stage):
        for path in paths.split():
            layout.append((int(mode, 8), uids.get(owner, int(owner) if owner.isdigit() else -1), int(group), path))
    return layout


@pytest.fixture()
def scratch() -> Iterator[Path]:
    """A folder uid 1000 can reach (pytest's tmp_path sits under a root-only 0700 folder)."""
    path = Path(tempfile.mkdtemp(prefix="helical-perm-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def _can_write(folder: Path, uid: int, gid: int) -> bool:
    probe = folder / f"probe-{uid}-{gid}"
    as_user = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
    done = subprocess.run([*as_user, "sh", "-c", f": > '{probe}'"], capture_output=True)
    return done.returncode == 0 and probe.exists()


def _seed(folder: Path, mode: int, uid: int, gid: int) -> Path:
    """What Docker does to a new named volume: the image folder's owner and mode (and content) copied onto it."""
    folder.mkdir()
    (folder / "from-the-image").write_text("x")
    os.chown(folder / "from-the-image", uid, gid)
    os.chown(folder, uid, gid)
    folder.chmod(mode)
    return folder


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv (util-linux)")
def test_a_volume_seeded_from_the_image_is_writable_by_uid_1000_once_the_init_ran(scratch: Path) -> None:
    layout = {path: (mode, uid, gid) for mode, uid, gid, path in _image_layout()}
    assert set(_init_dirs()) <= set(layout)  # every folder the init owns comes from the image
    for path in _init_dirs():
        mode, uid, gid = layout[path]
        assert (uid, gid) == (50000, 0) and mode & 0o070 == 0o070, f"{path}: not group-writable for gid 0"

    # the old layout (50000:0, 0700): uid 1000 of group 0, as compose runs Airflow, cannot write: nothing starts
    old = _seed(scratch / "old", 0o700, 50000, 0)
    assert not _can_write(old, 1000, 0)
    # the image's layout now: group 0 may write, so `user: 1000:0` works even before the init ...
    new = {path: _seed(scratch / Path(path).name, *layout[path]) for path in _init_dirs()}
    for folder in new.values():
        assert _can_write(folder, 1000, 0) and not _can_write(folder, 1000, 1000)

    # ... and the init (root) hands the folders, and what the image put in them, to AIRFLOW_UID
    folders = [str(f) for f in [old, *new.values()]]
    env = {"PATH": os.environ["PATH"], "AIRFLOW_UID": "1000", "HELICAL_INIT_DIRS": " ".join(folders),
           "HELICAL_INIT_SKIP_AIRFLOW": "1"}  # fmt: skip
    done = subprocess.run(["bash", str(AIRFLOW_INIT)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    for folder in map(Path, folders):
        assert (folder.stat().st_uid, folder.stat().st_gid) == (1000, 0)
        assert (folder / "from-the-image").stat().st_uid == 1000
        assert _can_write(folder, 1000, 1000), f"{folder} is not writable by its owner after the init"
    assert _can_write(old, 1000, 0)  # an old volume is repaired too
    assert (scratch / "secrets").stat().st_mode & 0o007 == 0  # the admin password file's folder: not for others

    # it refuses to hand them to root, or to nobody
    for uid in ("0", ""):
        refused = subprocess.run(["bash", str(AIRFLOW_INIT)], capture_output=True, text=True,
                                 env={**env, "AIRFLOW_UID": uid})  # fmt: skip
        assert refused.returncode == 1 and "AIRFLOW_UID" in refused.stderr


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv (util-linux)")
def test_the_init_runs_airflow_as_airflow_uid_and_writes_the_password_file(scratch: Path) -> None:
    """The Airflow half of airflow-init.sh, with `python -m helical_airflow.stack.bootstrap` recorded, not run."""
    bin_dir = scratch / "bin"
    bin_dir.mkdir()
    log = scratch / "log"
    log.mkdir(mode=0o777)
    log.chmod(0o777)
    python = bin_dir / "python"
    system_python = "/usr/bin/python3"  # uid 1000 may not reach the project's env; the password step is stdlib
    python.write_text(f"""#!/bin/sh
if [ "$1" = "-m" ]; then echo "$(id -u):$(id -g) $HOME $*" >> {log}/bootstrap.log; exit 0; fi
exec {system_python} "$@"
""")
    python.chmod(0o755)
    secrets = _seed(scratch / "secrets", 0o2770, 50000, 0)  # the image's layout
    admin = scratch / "airflow_admin_password"
    admin.write_text("s3cret-admin-password\n")
    admin.chmod(0o644)  # as a Compose secret file (0644 inside the 0700 secrets/ folder)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "AIRFLOW_UID": "1000", "HELICAL_INIT_DIRS": str(secrets),
           "HELICAL_ADMIN_PASSWORD_FILE": str(admin), "HELICAL_PASSWORDS_FILE": str(secrets / "passwords.json"),
           "GPU_POOL_SLOTS": "3"}  # fmt: skip
    done = subprocess.run(["bash", str(AIRFLOW_INIT)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    # Airflow ran as AIRFLOW_UID, group 0, with the airflow user's home: never as root
    assert (log / "bootstrap.log").read_text().split() == [
        "1000:0", "/home/airflow", "-m", "helical_airflow.stack.bootstrap", "3",
    ]  # fmt: skip
    written = secrets / "passwords.json"
    assert json.loads(written.read_text()) == {"admin": "s3cret-admin-password"}
    assert (written.stat().st_uid, written.stat().st_mode & 0o777) == (1000, 0o600)
    assert secrets.stat().st_mode & 0o777 == 0o770


def test_airflow_reads_every_secret_through_its_cmd_setting(full: dict, secrets: dict, tmp_path: Path) -> None:
    """The compose environment's *_CMD settings, run by Airflow 3.3.2 itself, give the secrets' values."""
    pytest.importorskip("airflow")
    env = dict(full["services"]["airflow-scheduler"]["environment"])
    folder = tmp_path / "run-secrets"  # stands in for /run/secrets
    folder.mkdir()
    for name, value in secrets.items():
        (folder / name).write_text(value)
    cmds = {k: v.replace("/run/secrets/", f"{folder}/") for k, v in env.items() if k.endswith("_CMD")}
    keys = {"database": "sql_alchemy_conn", "celery": ["broker_url", "result_backend"], "core": "fernet_key",
            "api_auth": "jwt_secret", "api": "secret_key"}  # fmt: skip
    wanted = [
        (section, key) for section, names in keys.items() for key in ([names] if isinstance(names, str) else names)
    ]
    script = "import json, sys\nfrom airflow.configuration import conf\n" + (
        f"print(json.dumps([conf.get(s, k) for s, k in {wanted!r}]))"
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
    run_env = {**base, **cmds, "AIRFLOW_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=run_env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    got = dict(zip(wanted, json.loads(done.stdout.strip().splitlines()[-1]), strict=True))
    assert got == {
        ("database", "sql_alchemy_conn"): secrets["airflow_sql_alchemy_conn"],
        ("celery", "broker_url"): secrets["airflow_celery_broker_url"],
        ("celery", "result_backend"): secrets["airflow_celery_result_backend"],
        ("core", "fernet_key"): secrets["airflow_fernet_key"],
        ("api_auth", "jwt_secret"): secrets["airflow_jwt_secret"],
        ("api", "secret_key"): secrets["airflow_api_secret_key"],
    }


def test_redis_takes_its_password_from_the_config_secret_and_the_healthcheck_logs_in(
    full: dict, secrets: dict, tmp_path: Path
) -> None:
    """A real redis-server started as compose starts it (config file from the secret), with the real healthcheck."""
    from stack_helpers import free_ports, require_binaries, wait_for

    require_binaries("redis-server", "redis-cli")
    import redis

    folder = tmp_path / "run-secrets"
    folder.mkdir()
    for name, value in secrets.items():
        (folder / name).write_text(value)
    service = full["services"]["redis"]
    (port,) = free_ports(1)
    argv = [a.replace("/run/secrets/", f"{folder}/") for a in service["command"]]
    argv[0] = shutil.which("redis-server") or "redis-server"
    proc = subprocess.Popen([*argv, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_for(lambda: subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).returncode == 0,
                 20, "redis-server")  # fmt: skip
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(port=port).ping()  # no password: refused
        assert redis.Redis(port=port, password=secrets["redis_password"]).ping()
        assert redis.from_url(secrets["airflow_celery_broker_url"].replace("@redis:6379", f"@127.0.0.1:{port}")).ping()
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode()
        assert secrets["redis_password"] not in cmdline  # not in `ps`
        # the compose healthcheck, as the container's shell runs it (`$$` is compose's escape for `$`)
        check = service["healthcheck"]["test"][1].replace("$$", "$").replace("/run/secrets/", f"{folder}/")
        check = check.replace("redis-cli ping", f"redis-cli -p {port} ping")
        assert subprocess.run(["sh", "-c", check], capture_output=True).returncode == 0
        wrong = tmp_path / "wrong"
        wrong.mkdir()
        (wrong / "redis_password").write_text("not-the-password")
        bad = check.replace(f"{folder}/", f"{wrong}/")
        assert subprocess.run(["sh", "-c", bad], capture_output=True).returncode != 0  # the check can fail
    finally:
        proc.terminate()
        proc.wait(timeout=10)
