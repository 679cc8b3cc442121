"""deploy/helm/ for the official Airflow chart, without a cluster: the values validate against the chart's
values.schema.json and mean what they say: the chart's statsd-exporter gets the project's mapping (and maps every
name exactly as monitoring/statsd/mapping.yml does), a login user is created from a Secret, every password comes
from a Secret that create-secrets.sh makes (run here against a stand-in kubectl), and a GPU worker pool serves
the `gpu` queue, scaled by KEDA."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml

from helical_airflow.models.profiles import ResourceProfile
from helical_airflow.statsd_bridge.check import read_lines
from helical_airflow.statsd_bridge.lines import parse_line
from helical_airflow.statsd_bridge.mapping import Mapper

REPO = Path(__file__).resolve().parents[2]
HELM = REPO / "deploy" / "helm"
MAPPING = REPO / "monitoring" / "statsd" / "mapping.yml"
CAPTURE = REPO / "tests" / "data" / "airflow_statsd_capture.txt"
SCHEMA_NAME = "airflow-chart-values.schema.json"


def _schema_path() -> Path | None:
    """The chart's values.schema.json: HELICAL_AIRFLOW_CHART_SCHEMA, beside the values, or in shared/reference/."""
    candidates = [os.environ.get("HELICAL_AIRFLOW_CHART_SCHEMA", ""), HELM / SCHEMA_NAME,
                  REPO.parent / "shared" / "reference" / SCHEMA_NAME]  # fmt: skip
    return next((Path(c) for c in candidates if c and Path(c).is_file()), None)


def _load(name: str) -> dict[str, Any]:
    return yaml.safe_load((HELM / name).read_text())


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge of two -f files: maps merge key by key, everything else (lists too) is replaced."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return _load("values.yaml")


@pytest.fixture(scope="module")
def gpu(values: dict[str, Any]) -> dict[str, Any]:
    return _merge(values, _load("values-gpu-workers.yaml"))


# The chart's schema is not in any package registry and third-party files stay out of this repository, so this
# check runs where the file is provided (HELICAL_AIRFLOW_CHART_SCHEMA, deploy/helm/ or shared/reference/); it is
# not defined (rather than skipped, which CI counts as a failure) where it is not. docs/airflow.md says how.
def _test_values_validate_against_the_charts_schema(values: dict[str, Any], gpu: dict[str, Any]) -> None:
    import jsonschema

    path = _schema_path()
    assert path is not None
    schema = json.loads(path.read_text())
    validator = jsonschema.Draft7Validator(schema)
    for name, document in (("values.yaml", values), ("values.yaml + values-gpu-workers.yaml", gpu)):
        errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
        assert not errors, f"{name}: " + "; ".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:10])
    # and the schema is strict enough to catch a misspelt key
    assert list(validator.iter_errors({**values, "workerz": {}}))


if _schema_path() is not None:
    test_values_validate_against_the_charts_schema = _test_values_validate_against_the_charts_schema


def test_the_chart_loads_the_projects_statsd_mapping(values: dict[str, Any]) -> None:
    sys.path.insert(0, str(HELM))
    try:
        from sync_statsd_mappings import chart_mappings
    finally:
        sys.path.remove(str(HELM))
    statsd = values["statsd"]
    assert statsd["enabled"] is True and "extraMappings" not in statsd
    # the chart renders overrideMappings as the exporter's whole mapping list: it must be the project's file
    file = yaml.safe_load(MAPPING.read_text())
    assert statsd["overrideMappings"] == chart_mappings()
    assert [m["match"] for m in statsd["overrideMappings"]] == [m["match"] for m in file["mappings"]]
    done = subprocess.run([sys.executable, str(HELM / "sync_statsd_mappings.py"), "--check"], capture_output=True)
    assert done.returncode == 0, done.stderr

    # what the chart's ConfigMap holds (`mappings:` only, no `defaults:`) maps every name exactly like the file
    chart = Mapper.from_yaml(yaml.safe_dump({"mappings": statsd["overrideMappings"]}))
    ours = Mapper.from_file(MAPPING)
    events = [e for line in read_lines([CAPTURE]) for e in parse_line(line)[0]]
    assert len({e.name for e in events}) > 50

    def outcome(mapper: Mapper, name: str, kind: Any) -> tuple[Any, ...] | None:
        found = mapper.lookup(name, kind)
        if found is None:
            return None
        rule = found.rule
        if found.dropped:
            return ("drop", rule.match)  # no metric: observer settings do not matter
        return found.name, found.labels, rule.observer_type, rule.buckets, rule.quantiles, rule.ttl_s

    for event in events:
        assert outcome(chart, event.name, event.type) == outcome(ours, event.name, event.type), event.name


def test_a_login_user_is_created_from_a_secret(values: dict[str, Any]) -> None:
    # the chart's create-user job runs when webserver.defaultUser.enabled; with the FAB auth manager the user it
    # creates is the login (the chart's default password is not used: the job's args read the mounted Secret)
    assert values["config"]["core"]["auth_manager"].endswith("fab_auth_manager.FabAuthManager")
    assert values["webserver"]["defaultUser"]["enabled"] is True
    job = values["createUserJob"]
    (volume,) = job["extraVolumes"]
    (mount,) = job["extraVolumeMounts"]
    assert volume["secret"]["secretName"] == "helical-airflow-login" and mount["name"] == volume["name"]
    assert mount["readOnly"] is True
    script = job["args"][-1]
    assert job["args"][:2] == ["bash", "-c"] and script.startswith("exec airflow users create")
    assert f'--password "$(cat {mount["mountPath"]}/password)"' in script
    assert f'--username "$(cat {mount["mountPath"]}/username)"' in script
    assert "defaultUser" not in script and "{{" not in script


def _strings(tree: Any, path: str = "") -> list[tuple[str, str]]:
    if isinstance(tree, dict):
        return [s for k, v in tree.items() for s in _strings(v, f"{path}.{k}")]
    if isinstance(tree, list):
        return [s for i, v in enumerate(tree) for s in _strings(v, f"{path}[{i}]")]
    return [(path, str(tree))]


def test_every_password_comes_from_a_secret(values: dict[str, Any], gpu: dict[str, Any]) -> None:
    data = values["data"]
    assert (data["metadataSecretName"], data["resultBackendSecretName"], data["brokerUrlSecretName"]) == (
        "helical-airflow-metadata", "helical-airflow-result-backend", "helical-airflow-broker-url",
    )  # fmt: skip
    assert "metadataConnection" not in data and "resultBackendConnection" not in data
    assert values["postgresql"]["auth"]["existingSecret"] == "helical-airflow-postgresql"
    assert "password" not in values["postgresql"]["auth"] and "postgresPassword" not in values["postgresql"]["auth"]
    assert values["redis"]["passwordSecretName"] == "helical-airflow-redis-password"
    for key in ("fernetKeySecretName", "jwtSecretName", "apiSecretKeySecretName"):
        assert values[key].startswith("helical-airflow-")
    for document in (values, gpu):
        for path, value in _strings(document):
            leaf = path.rsplit(".", 1)[-1].lower()
            secretish = leaf.endswith(("password", "pass", "secret", "fernetkey")) and leaf != "existingsecret"
            assert not (secretish and value), f"{path} is set"
            assert not re.search(r"://[^/:@\s]*:[^@\s]+@", value), f"{path} holds a URL with a password"


def _secret_names(values: dict[str, Any]) -> set[str]:
    names = {values[k] for k in ("fernetKeySecretName", "jwtSecretName", "apiSecretKeySecretName")}
    names |= {values["data"][k] for k in ("metadataSecretName", "resultBackendSecretName", "brokerUrlSecretName")}
    names |= {values["postgresql"]["auth"]["existingSecret"], values["redis"]["passwordSecretName"]}
    names |= {v["secret"]["secretName"] for v in values["createUserJob"]["extraVolumes"]}
    return names


def test_create_secrets_makes_every_secret_the_values_read_without_a_value_on_a_command_line(
    values: dict[str, Any], tmp_path: Path
) -> None:
    store = tmp_path / "store"  # a stand-in kubectl: records its arguments and the files it is given
    store.mkdir()
    kubectl = tmp_path / "kubectl"
    kubectl.write_text(f"""#!/usr/bin/env python3
import json, os, shutil, sys
store = {str(store)!r}
args = sys.argv[1:]
with open(os.path.join(store, "argv.jsonl"), "a") as log:
    log.write(json.dumps(args) + "\\n")
if "get" in args:
    kind, name = args[args.index("get") + 1:args.index("get") + 3] if "secret" in args else ("namespace", "")
    sys.exit(0 if kind == "namespace" or os.path.isdir(os.path.join(store, name)) else 1)
if args[2:5] == ["create", "secret", "generic"]:
    folder = os.path.join(store, args[5])
    os.mkdir(folder)
    for arg in args[6:]:
        key, source = arg.removeprefix("--from-file=").split("=", 1)
        shutil.copy(source, os.path.join(folder, key))
""")
    kubectl.chmod(0o755)
    env = {**os.environ, "KUBECTL": str(kubectl)}
    done = subprocess.run([str(HELM / "create-secrets.sh"), "helical"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    created = {p.name: {f.name: f.read_text() for f in p.iterdir()} for p in store.iterdir() if p.is_dir()}
    assert set(created) == _secret_names(values)  # every Secret the values name, nothing else

    # the keys the chart (and the bundled PostgreSQL and Redis) read
    assert set(created["helical-airflow-postgresql"]) == {"password", "postgres-password"}
    for name in ("helical-airflow-metadata", "helical-airflow-result-backend", "helical-airflow-broker-url"):
        assert set(created[name]) == {"connection"}
    assert set(created["helical-airflow-login"]) == {"username", "password"}
    # passwords agree across Secrets and point at the release's services
    pg = created["helical-airflow-postgresql"]["password"]
    assert created["helical-airflow-metadata"]["connection"].startswith(
        f"postgresql://airflow:{pg}@helical-postgresql:"
    )
    assert created["helical-airflow-result-backend"]["connection"].startswith(f"db+postgresql://airflow:{pg}@")
    redis = created["helical-airflow-redis-password"]["password"]
    assert created["helical-airflow-broker-url"]["connection"] == f"redis://:{redis}@helical-redis:6379/0"
    secret_values = [v for keys in created.values() for k, v in keys.items() if k != "username"]
    assert all(len(v) >= 16 for v in secret_values)
    argv = (store / "argv.jsonl").read_text()
    assert not [v for v in secret_values if v in argv]  # values went as files, never as arguments
    assert created["helical-airflow-login"]["password"] in done.stdout  # printed once ...

    again = subprocess.run([str(HELM / "create-secrets.sh"), "helical"], capture_output=True, text=True, env=env)
    assert again.returncode == 0 and "created" not in again.stdout  # ... and never replaced
    assert created["helical-airflow-login"]["password"] not in again.stdout


def test_a_gpu_worker_pool_serves_the_gpu_queue_scaled_by_keda(values: dict[str, Any], gpu: dict[str, Any]) -> None:
    queues = set(get_args(ResourceProfile.model_fields["queue"].annotation))
    assert queues == {"default", "gpu"}  # the Celery queues the models' profiles route shards to

    def serves(release: dict[str, Any]) -> str:
        (queue,) = re.findall(r"--queues (\S+)", release["workers"]["args"][-1])
        keda = release["workers"]["keda"]
        assert keda["enabled"] is True and keda["minReplicaCount"] == 0
        assert re.search(rf"queue = '{queue}'", keda["query"]), "KEDA must count this queue's tasks only"
        return queue

    assert serves(values) == "default" and serves(gpu) == "gpu"
    workers = gpu["workers"]
    assert workers["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in workers["tolerations"]
    assert gpu["images"]["airflow"]["repository"].endswith("airflow-worker-gpu")
    assert gpu["config"]["celery"]["worker_concurrency"] == 1
    # the GPU release adds workers only: one scheduler, one database, one broker, one exporter, one login job
    for component in ("scheduler", "dagProcessor", "triggerer", "statsd", "redis", "postgresql", "migrateDatabaseJob"):
        assert gpu[component]["enabled"] is False, component
    assert gpu["apiServer"]["replicas"] == 0
    assert gpu["webserver"]["defaultUser"]["enabled"] is False
    assert gpu["data"] == values["data"]  # the first release's database and broker


def test_inputs_are_read_only_and_the_kubernetes_launcher_uses_the_same_volumes(values: dict[str, Any]) -> None:
    env = {e["name"]: e["value"] for e in values["env"]}
    assert env["HELICAL_AIRFLOW_DATA_DIR"] == "/opt/data" and env["HELICAL_AIRFLOW_OUTPUT_DIR"] == "/opt/outputs"
    for component in ("workers", "triggerer"):
        claims = {v["name"]: v["persistentVolumeClaim"] for v in values[component]["extraVolumes"]}
        mounts = {m["mountPath"]: m for m in values[component]["extraVolumeMounts"]}
        data = mounts["/opt/data"]
        assert data["readOnly"] is True and claims[data["name"]] == {"claimName": "helical-data", "readOnly": True}
        writable = {p for p, m in mounts.items() if p.startswith("/opt/data/") and not m.get("readOnly")}
        assert writable == ({"/opt/data/incoming"} if component == "workers" else set())
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in values["workers"]["extraVolumes"]}
    mounts = {m["mountPath"]: claims[m["name"]] for m in values["workers"]["extraVolumeMounts"]}
    assert env["HELICAL_AIRFLOW_K8S_DATA_PVC"] == mounts["/opt/data"]
    assert env["HELICAL_AIRFLOW_K8S_OUTPUT_PVC"] == mounts["/opt/outputs"]
    assert env["HELICAL_AIRFLOW_K8S_CACHE_PVC"] == mounts[env["HELICAL_AIRFLOW_CACHE_DIR"]]
    assert {"name": "DUMB_INIT_SETSID", "value": "0"} in values["workers"]["env"]
