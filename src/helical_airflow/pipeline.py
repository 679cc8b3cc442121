"""The whole job in one process: validate -> plan -> embed every shard -> merge -> quality -> report.

`helical-airflow run` calls this; the Airflow DAG calls the same steps one task at a time.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from . import objstore
from .embed import embed_shards
from .plan import make_plan
from .quality import QualityGateError, check_label_key, quality_gate, require_passed
from .report import write_report
from .spec import Manifest, Plan, RunParams, ShardResult
from .store import load_manifest, manifest_file, merge
from .tracking import configured_uri, is_tracked, track_manifest
from .validate import validate_input

log = logging.getLogger(__name__)

ShardCallback = Callable[[Plan, ShardResult], None]


def prepare(input_path: str | Path, params: RunParams, out_root: Path) -> Plan:
    summary = validate_input(str(input_path), params.model, params.layer, params.cache_dir, options=params.options)
    return make_plan(summary, params, out_root)


def embed_all(plan: Plan, on_shard: ShardCallback | None = None) -> list[ShardResult]:
    """Embed the shards not finished yet in this process, loading the model once, only if there is work to do."""
    results, _ = embed_shards(plan, [shard.index for shard in plan.shards], on_shard=on_shard)
    return results


def publish(plan: Plan, tracking_uri: str | None = None) -> Manifest:
    """After the quality gate: report.html, the MLflow run when tracking is configured (never fails), and, when the
    gate passed, `<dataset>/latest` pointed at this run (the CLI's `run` and `merge` and the DAG's publish all
    come here; a failed run gets its report, but `latest` stays on the last run that passed)."""
    manifest = load_manifest(plan)
    write_report(plan, manifest)
    manifest = track_manifest(plan, manifest, tracking_uri)
    if manifest.quality is None or manifest.quality.passed:
        point_latest(plan)
    return manifest


def point_latest(plan: Plan) -> Path:
    """Make `<out>/<dataset>/latest` a relative symlink to this run's folder, atomically (readers never see a
    missing `latest`)."""
    latest = plan.out_path.parent / "latest"
    tmp = latest.with_name(f".latest.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(plan.run_key)
    tmp.replace(latest)
    return latest


def finish(plan: Plan, label_key: str | None = None, tracking_uri: str | None = None) -> Manifest:
    """merge -> quality gate -> publish; raises QualityGateError (after writing the report) on failure."""
    merge(plan)
    report = quality_gate(plan, label_key)
    manifest = publish(plan, tracking_uri)
    require_passed(report)
    return manifest


def run(
    input_path: str | Path,
    params: RunParams,
    out_root: str | Path,
    on_plan: Callable[[Plan], None] | None = None,
    on_shard: ShardCallback | None = None,
    label_key: str | None = None,
    tracking_uri: str | None = None,
) -> Manifest:
    """The whole job. `input_path` and `out_root` may be object storage URLs (s3://BUCKET/..., objstore.py): the
    input is read from a verified local copy, the run is worked on in a local folder whose finished files go to the
    store as they are made; a rerun takes the store's finished shards and redoes only the missing ones."""
    store = str(out_root) if objstore.is_url(out_root) else None
    plan = prepare(input_path, params, objstore.work_root(out_root))
    check_label_key(plan.input.path, label_key)  # before any embedding
    if store is not None:
        found = objstore.pull_run(store, plan.out_path)
        log.info("%d shard(s) of run %s already in %s", found, plan.run_key, objstore.run_url(store, plan.out_path))
    if on_plan:
        on_plan(plan)
    if store is None:
        return run_plan(plan, on_shard, label_key, tracking_uri)
    return _run_to_store(plan, store, on_shard, label_key, tracking_uri)


def _run_to_store(
    plan: Plan, store: str, on_shard: ShardCallback | None, label_key: str | None, tracking_uri: str | None
) -> Manifest:
    """run_plan with every newly finished shard uploaded at once (a killed run keeps it), then the outputs, manifest
    last, and the `latest.json` pointer when the gate passed; a failed gate's report is uploaded too. A passed run's
    local work copy is then removed (a rerun or resume reads the store, pull_run; a failed one is kept to look at)."""

    def upload(plan: Plan, result: ShardResult) -> None:
        if not result.reused:
            objstore.push_shard(
                store, plan.out_path, plan.shard_file(result.index), plan.shard_result_file(result.index)
            )
        if on_shard:
            on_shard(plan, result)

    try:
        manifest = run_plan(plan, upload, label_key, tracking_uri)
    except QualityGateError:
        objstore.push_outputs(store, plan.out_path, latest=False)
        raise
    passed = manifest.quality is None or manifest.quality.passed
    objstore.push_outputs(store, plan.out_path, latest=passed)
    if passed:
        objstore.clear_work(plan.out_path)
    return manifest


def run_plan(
    plan: Plan, on_shard: ShardCallback | None = None, label_key: str | None = None, tracking_uri: str | None = None
) -> Manifest:
    """`run` after planning: embed what is missing, then merge -> gate -> publish unless the finished run's outputs
    are current (other jobs, e.g. annotate.py, plan first and come here)."""
    results = embed_all(plan, on_shard)
    if all(r.reused for r in results) and _outputs_current(plan, label_key):
        log.info("every shard was already done; outputs in %s are current", plan.out_dir)
        manifest = load_manifest(plan)
        uri = configured_uri(tracking_uri)
        if uri and not is_tracked(manifest, uri):  # e.g. the server was down last time
            manifest = track_manifest(plan, manifest, uri)
        point_latest(plan)  # this run is the dataset's latest, even when nothing had to be redone
        return manifest
    return finish(plan, label_key, tracking_uri)


def _outputs_current(plan: Plan, label_key: str | None = None) -> bool:
    if not (manifest_file(plan).is_file() and (plan.out_path / "report.html").is_file()):
        return False
    quality = load_manifest(plan).quality
    if quality is None or not quality.passed:
        return False
    return label_key is None or quality.label_key == label_key  # another label: new scores and report
