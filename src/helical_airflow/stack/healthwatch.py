"""`python -m helical_airflow.stack.healthwatch STATE_DIR`: a supervisord program that restarts unhealthy services.

supervisord restarts a service that exits. This watcher covers the rest: every `INTERVAL_S` it runs each
service's health probe (the same probes `stack up` waits on); one that fails `FAILURES` times in a row while
supervisord reports it RUNNING for more than `GRACE_S` (e.g. a scheduler that is alive but no longer
scheduling, its /health failing) is restarted through supervisord; one supervisord gave up on (FATAL: it kept
exiting, e.g. while Postgres was restarting) is started again. It also keeps the PID files current.
Detection + restart stays well under a minute: 3 x 10 s, then the service's own start-up.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
import xmlrpc.client
from pathlib import Path

from . import supervisor
from .config import StackConfig
from .manager import saved_config
from .services import all_services

log = logging.getLogger("helical_airflow.stack.healthwatch")
INTERVAL_S = 10.0
FAILURES = 3
GRACE_S = 60.0  # a service just (re)started gets this long to become healthy
NAME = "healthwatch"


def check_once(cfg: StackConfig, failures: dict[str, int]) -> list[str]:
    """One round: the names restarted."""
    cfg = saved_config(cfg)
    secrets = json.loads(cfg.secrets_file.read_text())
    server = supervisor.rpc(cfg)
    infos = {info["name"]: info for info in server.supervisor.getAllProcessInfo()}
    restarted = []
    for service in all_services(cfg, secrets):
        info = infos.get(service.name)
        if info is None or service.health is None:
            continue
        if info["statename"] == "FATAL":
            log.warning("%s gave up after repeated exits: starting it again", service.name)
            with contextlib.suppress(xmlrpc.client.Fault):
                server.supervisor.startProcess(service.name, False)
            restarted.append(service.name)
            continue
        uptime = info["now"] - info["start"]
        if info["statename"] != "RUNNING" or uptime < GRACE_S:
            failures.pop(service.name, None)
            continue
        if service.health():
            failures.pop(service.name, None)
            continue
        failures[service.name] = failures.get(service.name, 0) + 1
        if failures[service.name] >= FAILURES:
            log.warning("%s failed its health check %d times in a row: restarting it", service.name, FAILURES)
            failures.pop(service.name)
            supervisor.restart(cfg, service)
            restarted.append(service.name)
    supervisor.refresh_pid_files(cfg)
    return restarted


def main(state_dir: str) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    cfg = StackConfig.from_env(state_dir=Path(state_dir))
    failures: dict[str, int] = {}
    while True:
        time.sleep(INTERVAL_S)
        try:
            check_once(cfg, failures)
        except (OSError, xmlrpc.client.Error, ValueError) as exc:  # supervisord restarting, a file being rewritten
            log.warning("health round skipped: %s", exc)


if __name__ == "__main__":
    main(sys.argv[1])
