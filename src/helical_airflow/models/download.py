"""`helical-airflow models download MODEL`: a model's real files into helical's cache, with helical's own downloader.

For each file the family's `files()` lists (what helical's config downloads), from `HELICAL_AIRFLOW_MODELS_URL`
(helical's store by default) at the file's cache path, exactly as helical's `Downloader.download_via_name` builds
its URLs:
- a file already in the cache that the store confirms (helical's `check_file_valid`: size, and MD5 for single-part
  ETags) is kept, so a second run or a run after an interruption fetches only what is missing or wrong (resume is
  per file: helical's downloader has no byte-range resume);
- a file is fetched by helical's `download_via_link` (its tqdm progress bar) into `<name>.part`, checked the same
  way, then renamed: a cut download never leaves a half file under the real name (helical would trust it: its
  download_via_link skips any file that exists);
- the sha256 of every file is recorded in `<prefix>/DOWNLOADS.json`; the plan records each file's sha256 too.
Families whose helical code loads from the Hugging Face hub (from_pretrained) are fetched there, not here: E229.
helical is imported here, so the command sets CACHE_DIR_HELICAL_PREFIX first.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..settings import export
from . import cache
from .profiles import ModelSpec
from .registry import get_family, required_files, resolve_options

log = logging.getLogger(__name__)

DOWNLOADS_FILE = "DOWNLOADS.json"


def download_model(spec: ModelSpec, options: dict[str, str], cache_dir: str, base_url: str) -> dict[str, Any]:
    """Fetch the model's missing or stale files into `cache_dir`; returns {file: {"sha256", "url", "action"}}."""
    family = get_family(spec)
    if family.hub_repo:
        raise ConfigError(
            "E229",
            f"{spec.name!r} loads from the Hugging Face hub ({family.hub_repo}), not from helical's store",
            f"fetch it where the hub is reachable (huggingface-cli download {family.hub_repo}) and put the files "
            f"where docs/models/{family.name}.md says, under {cache.models_dir(cache_dir)}",
        )
    if cache.is_fixture_cache(cache_dir):
        raise ConfigError(
            "E226",
            f"{cache_dir} is a fixture cache (random weights); real weights would be mixed with them",
            "download into an empty folder or a real cache (--cache-dir)",
        )
    export("CACHE_DIR_HELICAL_PREFIX", str(cache.cache_root(cache_dir)))
    from helical.utils.downloader import Downloader

    resolved = resolve_options(spec, options)
    root = cache.models_dir(cache_dir)
    downloader = Downloader()
    done: dict[str, Any] = {}
    for rel in [*required_files(spec, resolved), cache.ENSEMBL_MAPPING_FILE]:
        url = f"{base_url}/{rel}"
        target = root / rel
        action = "kept"
        if not (target.is_file() and downloader.check_file_valid(url, target)):
            part = target.with_name(target.name + ".part")
            part.unlink(missing_ok=True)  # download_via_link skips a file that exists, half or whole
            try:
                downloader.download_via_link(part, url)
            except Exception as exc:  # helical raises a bare Exception for a bad status
                part.unlink(missing_ok=True)
                raise ConfigError(
                    "E230", f"downloading {url} failed: {exc}",
                    "check the network (and HELICAL_AIRFLOW_MODELS_URL), then run the same command again: "
                    "finished files are kept",
                ) from None  # fmt: skip
            if not downloader.check_file_valid(url, part):
                part.unlink(missing_ok=True)
                raise ConfigError("E230", f"{url} arrived incomplete or corrupt (size/MD5 differ from the store's)",
                                  "run the same command again")  # fmt: skip
            part.replace(target)
            action = "downloaded"
        done[rel] = {"sha256": _sha256(target), "url": url, "action": action}
        log.info("%s %s", action, rel)
    _record(cache_dir, spec, done)
    return done


def _record(cache_dir: str, spec: ModelSpec, files: dict[str, Any]) -> None:
    path = cache.cache_root(cache_dir) / DOWNLOADS_FILE
    record = json.loads(path.read_text()) if path.is_file() else {}
    record[spec.name] = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "files": {rel: {"sha256": f["sha256"], "url": f["url"]} for rel, f in files.items()},
    }
    path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
