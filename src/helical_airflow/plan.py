"""Turn a validated input and the user's parameters into a plan: a run key and row-range shards."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

from . import modality
from .errors import ConfigError
from .models import cache, get_model, is_fixture_cache, registry
from .spec import InputSummary, Plan, ResolvedParams, RunParams, ShardSpec
from .store import write_json
from .versions import code_version


def resolve_params(params: RunParams) -> ResolvedParams:
    """Fill what the user left open from the model's resource profile: the one place defaults are resolved."""
    spec = get_model(params.model)
    return ResolvedParams(
        **{
            **params.model_dump(),
            "precision": params.precision or spec.profile.precision,
            # a CPU runs bf16 only when asked for by name: a profile's bf16 (Tahoe) is its GPU precision
            "cpu_precision": "bf16" if params.precision == "bf16" else "fp32",
            "batch_size": params.batch_size or spec.profile.batch_size,
            "engine": params.engine or spec.profile.engine,
            "memory_cap_gb": params.memory_cap_gb or spec.profile.memory_cap_gb,
            "options": registry.resolve_options(spec, params.options),
        }
    )


def shard_ranges(n_cells: int, shard_size: int) -> list[ShardSpec]:
    return [
        ShardSpec(index=i, start=start, stop=min(start + shard_size, n_cells))
        for i, start in enumerate(range(0, n_cells, shard_size))
    ]


def task_groups(n_shards: int, slots: int, max_per_task: int) -> list[list[int]]:
    """Contiguous groups of shard indices, one embed task each: as few tasks as there are slots to run them, each
    at most `max_per_task` shards. A task loads the model once for its group (before: once per shard, ~50 s of
    start-up and loading against ~4 s of embedding for a 250-cell shard on CPU), and checkpoints every shard.
    """
    if n_shards <= 0:
        return []
    per_task = min(max_per_task, -(-n_shards // max(1, slots)))
    return [list(range(start, min(start + per_task, n_shards))) for start in range(0, n_shards, per_task)]


def weights_checksum(files: list[Path], root: Path) -> tuple[str, dict[str, str]]:
    """One checksum over the model's files (names and bytes), and each file's own sha256 (keyed relative to
    `root`, the models folder), read in one pass."""
    digest = hashlib.sha256()
    each: dict[str, str] = {}
    for path in sorted(files):
        digest.update(path.name.encode())
        own = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
                own.update(block)
        each[path.relative_to(root).as_posix()] = own.hexdigest()
    return digest.hexdigest(), each


#: parameters added after runs were keyed: in the key only when not at their default, so the run folders made
#: before them keep their keys (and their finished shards)
KEYED_WHEN_SET = {"agreement_cells": 256, "cpu_precision": "fp32"}


def run_key(summary: InputSummary, params: ResolvedParams, weights: str) -> str:
    """Same input, model, weights, parameters and code -> same key -> finished shards are reused.

    The cache location is left out on purpose: the weights checksum already pins what matters.
    """
    at_default = {name for name, default in KEYED_WHEN_SET.items() if getattr(params, name, default) == default}
    keyed = {
        "input_sha256": summary.sha256,
        "x_source": summary.x_source,
        "params": params.model_dump(exclude={"cache_dir", *at_default}),
        "weights": weights,
        "code": code_version(),
    }
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:16]


def make_plan(summary: InputSummary, params: RunParams, out_root: Path) -> Plan:
    """Write `<out_root>/<dataset>/<run_key>/plan.json` (kept if it exists) and return the plan."""
    spec = get_model(params.model)
    params = resolve_params(params)
    if params.device == "cpu":  # E228 now, not on a worker after the model's files were read
        registry.check_runnable(spec, "cpu", params.engine)
    if params.cpu_precision == "bf16" or (params.device == "cuda" and params.precision == "bf16"):
        registry.check_precision(spec, "bf16")  # E408 now, likewise
    files = registry.weights_files(spec, params.options, params.cache_dir)
    if not files:
        raise ConfigError(
            "E203",
            f"no weight files for model {params.model!r} in the cache",
            "build the offline fixture (helical-airflow models fixture --out DIR) or download the weights, "
            "then pass --cache-dir DIR",
        )
    weights, per_file = weights_checksum(files, cache.models_dir(params.cache_dir))
    key = run_key(summary, params, weights)
    dataset = modality.of(summary).dataset_name(summary.path)  # every supported suffix: sample.fa.gz -> sample
    out_dir = (out_root / dataset / key).resolve()
    plan_file = out_dir / "plan.json"
    blocking = next((d for d in (out_dir.parent, out_dir) if d.exists() and not d.is_dir()), None)
    if blocking is not None:  # e.g. a file named like the input inside the output folder
        raise ConfigError(
            "E209",
            f"the run folder {out_dir} cannot be made: {blocking} is a file",
            f"move that file away, or pass another --out (the run folder is <out>/{dataset}/<run key>)",
        )
    if plan_file.exists():
        return load_plan(plan_file)
    plan = Plan(
        run_key=key,
        dataset=dataset,
        out_dir=str(out_dir),
        input=summary,
        params=params,
        model_family=spec.family,
        helical_model_name=spec.helical_model_name,
        fixture=is_fixture_cache(params.cache_dir),
        weights_checksum=weights,
        weights_files=per_file,
        code_version=code_version(),
        shards=shard_ranges(summary.n_cells, params.shard_size),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    write_json(plan_file, plan)
    return plan


def load_plan(path: str | Path) -> Plan:
    path = Path(path)
    if not path.is_file():
        raise ConfigError("E204", f"plan file {path} does not exist", "create it with `helical-airflow plan`")
    return Plan.model_validate_json(path.read_text())
