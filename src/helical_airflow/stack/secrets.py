"""Generated credentials of the local stack: made once, stored 0600, never a default password."""

from __future__ import annotations

import base64
import json
import os
import secrets
from pathlib import Path

#: secret name -> how to make it
_MAKERS = {
    "postgres_password": lambda: secrets.token_urlsafe(18),
    "redis_password": lambda: secrets.token_urlsafe(18),
    "admin_password": lambda: secrets.token_urlsafe(12),  # Airflow UI / REST API user `admin`
    "fernet_key": lambda: base64.urlsafe_b64encode(os.urandom(32)).decode(),  # Airflow's connection encryption
    "jwt_secret": lambda: secrets.token_urlsafe(64),  # shared by every Airflow component; 86 bytes (HS512: >= 64)
    "api_secret_key": lambda: secrets.token_urlsafe(48),
}
#: shortest acceptable length (bytes) of a stored secret; a shorter one (made by an older version) is replaced
MIN_BYTES = {"jwt_secret": 64, "api_secret_key": 32}


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (0600), whatever the umask."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, 0o600)


def load_or_create(path: Path) -> tuple[dict[str, str], bool]:
    """The stack's secrets, and whether they were just generated (then the caller prints them once)."""
    existing: dict[str, str] = json.loads(path.read_text()) if path.is_file() else {}
    missing = {
        name: make()
        for name, make in _MAKERS.items()
        if name not in existing or len(existing[name].encode()) < MIN_BYTES.get(name, 0)
    }
    if missing:
        write_private(path, json.dumps({**existing, **missing}, indent=1) + "\n")
    return {**existing, **missing}, bool(missing)
