"""helical's weights-cache layout, known here without importing helical.

helical computes `CACHE_DIR_HELICAL = $CACHE_DIR_HELICAL_PREFIX/.cache/helical/models` (or
`~/.cache/helical/models`) once, at import time, and each model config lists the files it downloads
relative to that folder. Each family's `files.py` mirrors helical 3.1.4's lists; a test checks them against
helical's own `list_of_files_to_download` so a helical upgrade cannot silently change the layout.

Each model file's sha256 is remembered beside helical's folder (`file_sha256`), so a worker checks its own cache
against a plan's checksums without reading gigabytes of weights again for every embed process.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: marker file at the cache root (the prefix) written by `models fixture`
FIXTURE_MARKER = "FIXTURE.json"

#: helical's symbol <-> Ensembl table (helical.utils.mapping), downloaded on first use
ENSEMBL_MAPPING_FILE = "hsapiens_pybiomart.csv"


def cache_root(cache_dir: str | None) -> Path:
    """The prefix helical is pointed at (CACHE_DIR_HELICAL_PREFIX); None means helical's default, $HOME."""
    return Path(cache_dir).expanduser().resolve() if cache_dir else Path.home()


def models_dir(cache_dir: str | None) -> Path:
    """Where helical keeps model files under that prefix."""
    return cache_root(cache_dir) / ".cache" / "helical" / "models"


def missing_hint(model: str, has_fixture: bool) -> str:
    download = f"online: helical-airflow models download {model} --cache-dir DIR, then pass --cache-dir DIR"
    if has_fixture:
        offline = "offline: build the fixture cache (helical-airflow models fixture --out DIR) and pass --cache-dir DIR"
        return f"{offline}; {download}"
    return f"this model has no offline fixture; {download}"


def is_fixture_cache(cache_dir: str | None) -> bool:
    """True when the cache was written by `models fixture` (random weights, synthetic vocabulary)."""
    return (cache_root(cache_dir) / FIXTURE_MARKER).is_file()


def fixture_info(cache_dir: str | None) -> dict[str, Any] | None:
    """The fixture marker's contents, or None for a real cache."""
    marker = cache_root(cache_dir) / FIXTURE_MARKER
    if not marker.is_file():
        return None
    info: dict[str, Any] = json.loads(marker.read_text())
    return info


def sha256_sidecar(root: Path, rel: str) -> Path:
    """Where `file_sha256` remembers the checksum of `root/rel` (root: a models folder): `<prefix>/.cache/
    helical-airflow/sha256/<rel>.json`, outside helical's own folder so helical never sees a file it did not write."""
    return root.parents[1] / "helical-airflow" / "sha256" / f"{rel}.json"


def _stat_key(path: Path) -> list[int]:
    """What changes when the file's bytes may have: size, mtime, and ctime and inode (a copy with `cp -p` or `rsync
    -t` keeps the mtime, a same-size file swapped in keeps the size; neither keeps the ctime and inode)."""
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def file_sha256(root: Path, rel: str) -> str:
    """sha256 of the model file `root/rel`, read once: the digest is kept in a sidecar (`sha256_sidecar`) keyed by
    the file's size, mtime, ctime and inode, and read again only when one of them changed. A cache that cannot be
    written (a read-only mount) is hashed each time."""
    path = root / rel
    sidecar = sha256_sidecar(root, rel)
    key = _stat_key(path)
    try:
        saved = json.loads(sidecar.read_text())
        if saved["stat"] == key:
            return str(saved["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # none yet, or unreadable: hash the file
    with open(path, "rb") as fh:
        digest = hashlib.file_digest(fh, "sha256")
    if _stat_key(path) != key:  # changed while being read: remember nothing
        return digest.hexdigest()
    try:
        sidecar.parent.mkdir(parents=True, exist_ok=True)
        partial = sidecar.with_name(f".{sidecar.name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps({"stat": key, "sha256": digest.hexdigest()}))
        os.replace(partial, sidecar)  # atomic: concurrent embed processes of one worker never read half a sidecar
    except OSError as exc:
        log.debug("cannot remember the sha256 of %s in %s (%s): it is read again next time", path, sidecar, exc)
    return digest.hexdigest()
