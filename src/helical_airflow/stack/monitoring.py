"""Monitoring services of the local stack: the StatsD bridge, Prometheus, Alertmanager, node-exporter.

They run as local processes from Debian's packages (`scripts/install_monitoring.sh`), with the same
config files as the Docker stack: Prometheus reads a copy of monitoring/prometheus.yml whose targets
point at the local ports (and without cAdvisor, which needs Docker), plus monitoring/rules/.
StatsD goes to statsd_exporter when it is on PATH, else to `python -m helical_airflow.statsd_bridge`;
both read monitoring/statsd/mapping.yml. Grafana, cAdvisor, Loki and Promtail run only under Docker.

Ports (override with HELICAL_STACK_<NAME>_PORT): statsd (UDP, shared with the Airflow settings),
statsd_http 28102, prometheus 28090, alertmanager 28093, node_exporter 28100.
HELICAL_STACK_STATSD_CAPTURE=FILE makes the bridge also append every StatsD line it receives to FILE.
"""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
from typing import Any

import yaml

from .. import settings
from . import health
from .config import REPO_ROOT, StackConfig
from .process import Service

MONITORING_DIR = REPO_ROOT / "monitoring"
MAPPING_FILE = MONITORING_DIR / "statsd" / "mapping.yml"
INSTALL_HINT = "./scripts/install_monitoring.sh (apt), or run without monitoring: HELICAL_STACK_MONITORING=0"
CAPTURE_ENV = "HELICAL_STACK_STATSD_CAPTURE"  # file the bridge appends every received StatsD line to
DEFAULT_PORTS = {"statsd_http": 28102, "prometheus": 28090, "alertmanager": 28093, "node_exporter": 28100}


def http_200(url: str) -> health.Probe:
    """Ready when the URL answers 200 (Prometheus' /-/ready answers plain text, not JSON)."""

    def probe() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 (local URL built here)
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    return probe


def _port(cfg: StackConfig, name: str) -> int:
    return cfg.port(name, DEFAULT_PORTS[name])


def _which(*names: str) -> str | None:
    return next((found for found in map(shutil.which, names) if found), None)


def statsd_argv(cfg: StackConfig) -> list[str]:
    """statsd_exporter when installed, else the project's bridge: same flags, same mapping file."""
    flags = [
        f"--statsd.mapping-config={MAPPING_FILE}",
        f"--statsd.listen-udp={cfg.statsd_host}:{cfg.ports['statsd']}",
        "--statsd.listen-tcp=",
        f"--web.listen-address={cfg.host}:{_port(cfg, 'statsd_http')}",
    ]
    exporter = shutil.which("statsd_exporter")
    if exporter:
        return [exporter, *flags]
    capture = settings.get().env(CAPTURE_ENV) or None  # record every StatsD line (to check a new Airflow's names)
    return [cfg.python, "-m", "helical_airflow.statsd_bridge", *flags, *([f"--capture={capture}"] if capture else [])]


def local_prometheus_config(cfg: StackConfig) -> dict[str, Any]:
    """monitoring/prometheus.yml with local targets, absolute rule paths and no cAdvisor."""
    config: dict[str, Any] = yaml.safe_load((MONITORING_DIR / "prometheus.yml").read_text())
    local = {
        "airflow": _port(cfg, "statsd_http"),
        "node-exporter": _port(cfg, "node_exporter"),
        "prometheus": _port(cfg, "prometheus"),
        "alertmanager": _port(cfg, "alertmanager"),
    }
    jobs = []
    for job in config["scrape_configs"]:
        if job["job_name"] in local:  # cadvisor needs Docker: not scraped here
            job["static_configs"] = [{"targets": [f"{cfg.host}:{local[job['job_name']]}"]}]
            jobs.append(job)
    config["scrape_configs"] = jobs
    config["rule_files"] = [str(MONITORING_DIR / rule) for rule in config.get("rule_files", [])]
    config["alerting"]["alertmanagers"] = [{"static_configs": [{"targets": [f"{cfg.host}:{local['alertmanager']}"]}]}]
    config["global"]["external_labels"] = {**config["global"].get("external_labels", {}), "deployment": "local"}
    return config


def monitoring_services(cfg: StackConfig) -> list[Service]:
    host = cfg.host
    prom_dir = cfg.state_dir / "prometheus"
    prom_config = prom_dir / "prometheus.yml"

    def write_prometheus_config() -> None:
        prom_dir.mkdir(parents=True, exist_ok=True)
        prom_config.write_text(
            "# Written by `helical-airflow stack up` from monitoring/prometheus.yml; edit that file instead.\n"
            + yaml.safe_dump(local_prometheus_config(cfg), sort_keys=False)
        )

    def service(name: str, argv: list[str], port: int, probe: health.Probe, **kw: Any) -> Service:
        return Service(name=name, argv=argv, log_file=cfg.log_dir / f"{name}.log", port=port, health=probe,
                       install_hint=INSTALL_HINT, **kw)  # fmt: skip

    statsd_http = _port(cfg, "statsd_http")
    prometheus, alertmanager, node = (_port(cfg, n) for n in ("prometheus", "alertmanager", "node_exporter"))
    return [
        service("statsd-exporter", statsd_argv(cfg), statsd_http, health.tcp(host, statsd_http),
                udp_port=cfg.ports["statsd"], cwd=REPO_ROOT),
        service("node-exporter", [_which("prometheus-node-exporter", "node_exporter") or "prometheus-node-exporter",
                                  f"--web.listen-address={host}:{node}"],
                node, http_200(f"http://{host}:{node}/metrics")),
        service("alertmanager", [_which("prometheus-alertmanager", "alertmanager") or "prometheus-alertmanager",
                                 f"--config.file={MONITORING_DIR / 'alertmanager.yml'}",
                                 f"--storage.path={cfg.state_dir / 'alertmanager'}",
                                 f"--web.listen-address={host}:{alertmanager}",
                                 "--cluster.listen-address="],  # no gossip port: one local instance
                alertmanager, http_200(f"http://{host}:{alertmanager}/-/ready")),
        service("prometheus", [shutil.which("prometheus") or "prometheus", f"--config.file={prom_config}",
                               f"--storage.tsdb.path={prom_dir / 'data'}", f"--web.listen-address={host}:{prometheus}",
                               "--storage.tsdb.retention.time=15d", "--web.enable-lifecycle"],
                prometheus, http_200(f"http://{host}:{prometheus}/-/ready"), prepare=write_prometheus_config),
    ]  # fmt: skip


def prometheus_url(cfg: StackConfig) -> str:
    return f"http://{cfg.host}:{_port(cfg, 'prometheus')}"


def statsd_metrics_url(cfg: StackConfig) -> str:
    return f"http://{cfg.host}:{_port(cfg, 'statsd_http')}/metrics"
