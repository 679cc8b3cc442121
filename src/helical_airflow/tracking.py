"""MLflow run tracking: one MLflow run per finished embedding run, when tracking is configured.

Configured by `--tracking-uri` (CLI) or the setting MLFLOW_TRACKING_URI (settings.tracking_uri; the DAG's
workers read it too). Logs the parameters as executed, the model and weights checksum, throughput (cells/s,
every shard's seconds), the quality scores, and attaches manifest.json, quality.json and report.html.

Tracking never fails or hangs a finished run: an HTTP server is probed first (PROBE_TIMEOUT_S), MLflow's own
requests get a short timeout and no retries, and any error becomes a warning plus
`manifest.tracking = {"status": "untracked", ...}`. Rerunning the same command with the server up tracks the
run then, even though its outputs are current (pipeline.run). Nothing is imported without a URI.
"""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request

from . import settings
from .report import executed
from .spec import Manifest, Plan
from .store import manifest_file, write_json

log = logging.getLogger(__name__)
EXPERIMENT_ENV = "HELICAL_AIRFLOW_MLFLOW_EXPERIMENT"
DEFAULT_EXPERIMENT = "helical-airflow"
PROBE_TIMEOUT_S = 3.0
#: MLflow's HTTP settings while tracking (unless set already): one try, a short wait per request
HTTP_SETTINGS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
ARTIFACTS = ("manifest.json", "quality.json", "report.html")


def configured_uri(explicit: str | None = None) -> str | None:
    return explicit or settings.tracking_uri()


def params_of(plan: Plan, manifest: Manifest | None = None) -> dict[str, str]:
    flat = {f"param.{k}": str(v) for k, v in plan.params.model_dump(exclude={"cache_dir"}).items()}
    ran = {f"executed.{k}": v for k, v in executed(manifest.shards).items()} if manifest else {}
    return {
        **flat,
        **ran,
        "helical_model_name": plan.helical_model_name,
        "input_sha256": plan.input.sha256,
        "weights_checksum": plan.weights_checksum,
        "code_version": plan.code_version,
        "n_shards": str(len(plan.shards)),
        "n_cells": str(plan.input.n_cells),
    }


def metrics_of(manifest: Manifest) -> dict[str, float]:
    seconds = manifest.total_shard_seconds
    metrics = {
        "cells": float(manifest.total_cells),
        "shard_seconds_total": seconds,
        "cells_per_second": manifest.total_cells / seconds if seconds else 0.0,
        "model_load_seconds": float(sum(s.model_load_seconds for s in manifest.shards)),
        "max_peak_rss_mb": manifest.max_peak_rss_mb,
        "shards_reused": float(sum(s.reused for s in manifest.shards)),
    }
    q = manifest.quality
    if q:
        metrics |= {
            "quality_passed": float(q.passed),
            "mean_pairwise_cosine": q.mean_pairwise_cosine,
            "embedding_dim": float(q.embedding_dim),
        }
        if q.embedding_scores and q.pca_scores:
            metrics |= {
                "knn_accuracy": q.embedding_scores.knn_accuracy,
                "silhouette": q.embedding_scores.silhouette,
                "pca_knn_accuracy": q.pca_scores.knn_accuracy,
                "pca_silhouette": q.pca_scores.silhouette,
            }
    return metrics


def probe(uri: str) -> None:
    """An HTTP tracking server must answer /health within PROBE_TIMEOUT_S (else: untracked, at once)."""
    if not uri.startswith(("http://", "https://")):
        return  # file:, sqlite: and databricks URIs are left to MLflow
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=PROBE_TIMEOUT_S) as resp:  # noqa: S310
            if resp.status != 200:
                raise ConnectionError(f"{uri}/health answered HTTP {resp.status}")
    except urllib.error.HTTPError as exc:
        raise ConnectionError(f"{uri}/health answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ConnectionError(f"{uri} is not reachable: {getattr(exc, 'reason', exc)}") from None


def track(plan: Plan, manifest: Manifest, uri: str) -> dict[str, str]:
    """Log the run to MLflow; returns the manifest's tracking record. Never raises."""
    started = time.monotonic()
    experiment = settings.get().mlflow_experiment
    try:
        probe(uri)
        for key, value in HTTP_SETTINGS.items():
            settings.export_default(key, value)
        run_id = _log(plan, manifest, uri, experiment)
    except Exception as exc:  # a finished run never fails because of its tracking
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        log.warning("MLflow tracking at %s failed after %.1f s (%s): the run is finished and marked untracked in "
                    "manifest.json; run the same command again with the server up to track it",
                    uri, time.monotonic() - started, reason)  # fmt: skip
        return {"status": "untracked", "uri": uri, "error": reason}
    log.info("tracked in MLflow (%s, experiment %s) as run %s", uri, experiment, run_id)
    return {"status": "tracked", "uri": uri, "experiment": experiment, "mlflow_run_id": run_id}


def _log(plan: Plan, manifest: Manifest, uri: str, experiment: str) -> str:
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    q = manifest.quality
    tags = {
        "run_key": plan.run_key,
        "dataset": plan.dataset,
        "model": plan.params.model,
        "fixture": str(plan.fixture).lower(),
        "label_key": (q.label_key if q else None) or "",
        "quality": "passed" if q and q.passed else "failed" if q else "not run",
    }
    run = client.create_run(experiment_id, run_name=f"{plan.dataset}-{plan.run_key}", tags=tags)
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, 0) for k, v in metrics_of(manifest).items()]
    for shard in manifest.shards:  # one point per shard: step = shard index
        metrics.append(Metric("shard_seconds", shard.seconds, now, shard.index))
        if shard.seconds:
            metrics.append(Metric("shard_cells_per_second", shard.cells / shard.seconds, now, shard.index))
    params = [Param(k, v[:6000]) for k, v in params_of(plan, manifest).items()]
    client.log_batch(run_id, metrics=metrics[:1000], params=params, tags=[RunTag("helical_airflow", "1")])
    for name in ARTIFACTS:
        path = plan.out_path / name
        if path.is_file():
            client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, "FINISHED")
    return str(run_id)


def is_tracked(manifest: Manifest, uri: str) -> bool:
    record = manifest.tracking or {}
    return record.get("status") == "tracked" and record.get("uri") == uri


def track_manifest(plan: Plan, manifest: Manifest, tracking_uri: str | None = None) -> Manifest:
    """Track the run when configured and not yet tracked there; the record goes into manifest.json."""
    uri = configured_uri(tracking_uri)
    if not uri or is_tracked(manifest, uri):
        return manifest
    manifest = manifest.model_copy(update={"tracking": track(plan, manifest, uri)})
    write_json(manifest_file(plan), manifest)
    return manifest
