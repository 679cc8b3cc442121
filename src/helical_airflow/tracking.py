"""MLflow run tracking: one MLflow run per finished embedding run, when MLFLOW_TRACKING_URI is set.

Logs the parameters, the model and weights checksum, throughput and quality numbers, and attaches
manifest.json, quality.json and report.html. Nothing happens (and mlflow is not imported) without the
variable, so the CLI stays quick and offline by default.
"""

from __future__ import annotations

import logging
import os

from .spec import Manifest, Plan

log = logging.getLogger(__name__)
EXPERIMENT_ENV = "HELICAL_AIRFLOW_MLFLOW_EXPERIMENT"


def params_of(plan: Plan) -> dict[str, str]:
    flat = {f"param.{k}": str(v) for k, v in plan.params.model_dump(exclude={"cache_dir"}).items()}
    return {
        **flat,
        "helical_model_name": plan.helical_model_name,
        "input_sha256": plan.input.sha256,
        "weights_checksum": plan.weights_checksum,
        "code_version": plan.code_version,
        "n_shards": str(len(plan.shards)),
    }


def metrics_of(manifest: Manifest) -> dict[str, float]:
    seconds = manifest.total_shard_seconds
    metrics = {
        "cells": float(manifest.total_cells),
        "shard_seconds_total": seconds,
        "cells_per_second": manifest.total_cells / seconds if seconds else 0.0,
        "max_peak_rss_mb": manifest.max_peak_rss_mb,
        "shards_reused": float(sum(s.reused for s in manifest.shards)),
    }
    if manifest.quality:
        metrics |= {
            "quality_passed": float(manifest.quality.passed),
            "mean_pairwise_cosine": manifest.quality.mean_pairwise_cosine,
            "embedding_dim": float(manifest.quality.embedding_dim),
        }
    return metrics


def track(plan: Plan, manifest: Manifest) -> str | None:
    """Log the run to MLflow; returns the MLflow run id, or None when tracking is off."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return None
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(os.environ.get(EXPERIMENT_ENV, "helical-airflow"))
    tags = {
        "run_key": plan.run_key,
        "dataset": plan.dataset,
        "model": plan.params.model,
        "fixture": str(plan.fixture).lower(),
    }
    with mlflow.start_run(run_name=f"{plan.dataset}-{plan.run_key}", tags=tags) as run:
        mlflow.log_params(params_of(plan))
        mlflow.log_metrics(metrics_of(manifest))
        for name in ("manifest.json", "quality.json", "report.html"):
            path = plan.out_path / name
            if path.is_file():
                mlflow.log_artifact(str(path))
    log.info("tracked in MLflow (%s) as run %s", uri, run.info.run_id)
    return str(run.info.run_id)
