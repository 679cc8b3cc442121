"""The local stack's MLflow tracking server: `mlflow server` with a SQLite backend and served artifacts.

The server is the full `mlflow` package, which the project's environment does not carry (its client is
mlflow-skinny, extra `tracking`): scripts/install_mlflow_server.sh puts the same version into ./.venv-mlflow
(scripts/install_test_deps.sh runs it). HELICAL_AIRFLOW_MLFLOW_SERVER names another `mlflow` program;
HELICAL_STACK_MLFLOW=0 leaves the server out (the workers then track nothing). Port: HELICAL_STACK_MLFLOW_PORT
(28500). The Airflow processes get MLFLOW_TRACKING_URI pointing at it (airflow_env.py).
"""

from __future__ import annotations

import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from .. import settings
from .config import REPO_ROOT, StackConfig
from .process import Service

SERVER_ENV = "HELICAL_AIRFLOW_MLFLOW_SERVER"
DEFAULT_PORT = 28500
INSTALL_HINT = "scripts/install_mlflow_server.sh (the full mlflow package, in ./.venv-mlflow)"


def server_binary() -> str | None:
    """The `mlflow` program that has the server: HELICAL_AIRFLOW_MLFLOW_SERVER, else ./.venv-mlflow/bin/mlflow."""
    configured = settings.get().env(SERVER_ENV).strip()
    if configured:
        return shutil.which(configured) or (configured if Path(configured).is_file() else None)
    local = REPO_ROOT / ".venv-mlflow" / "bin" / "mlflow"
    return str(local) if local.is_file() else None


def enabled(cfg: StackConfig) -> bool:
    return settings.get().stack("MLFLOW", "1").strip().lower() not in ("0", "false", "no", "off")


def port(cfg: StackConfig) -> int:
    return cfg.port("mlflow", DEFAULT_PORT)


def tracking_uri(cfg: StackConfig) -> str:
    return f"http://{cfg.host}:{port(cfg)}"


def server_argv(binary: str, host: str, listen_port: int, state: Path) -> list[str]:
    """`mlflow server` on host:port with its SQLite database and artifacts under `state`."""
    return [
        binary, "server", "--host", host, "--port", str(listen_port),
        "--backend-store-uri", f"sqlite:///{state / 'mlflow.db'}",
        "--artifacts-destination", str(state / "artifacts"), "--serve-artifacts", "--workers", "1",
    ]  # fmt: skip


def healthy(uri: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=timeout) as resp:  # noqa: S310 (our own URL)
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def mlflow_services(cfg: StackConfig) -> list[Service]:
    if not enabled(cfg):
        return []
    state = cfg.state_dir / "mlflow"
    binary = server_binary() or "mlflow-server-not-installed"
    uri = tracking_uri(cfg)
    return [
        Service(
            name="mlflow",
            argv=server_argv(binary, cfg.host, port(cfg), state),
            log_file=cfg.log_dir / "mlflow.log",
            port=port(cfg),
            health=lambda: healthy(uri),
            install_hint=INSTALL_HINT,
            prepare=lambda: state.mkdir(parents=True, exist_ok=True),
        )
    ]


def server_version(binary: str) -> str:
    done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.strip().rsplit(" ", 1)[-1]
