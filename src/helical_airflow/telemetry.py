"""The runner's own metrics over StatsD, sent by every `embed-shard` process.

Off unless HELICAL_AIRFLOW_STATSD_HOST is set (HELICAL_AIRFLOW_STATSD_PORT defaults to 9125, the
StatsD port of statsd-exporter and of the local bridge), so library use stays quiet. Sending never
fails a shard: a bad setting or an unreachable host is logged and the metrics are skipped.

Plain StatsD has no tags, so the labels travel in the name, one dot-separated component each, in
the order monitoring/statsd/mapping.yml reads them back:

    helical.shard.<metric>.<model>.<device>.<dataset>.<run_key>   metric: cells (c), done (c),
        cells_per_second (g), seconds (ms), model_load_seconds (ms), peak_rss_bytes (g),
        peak_gpu_bytes (g, GPU only), memory_cap_bytes (g, the plan's memory cap)
    helical.failure.<code>.<model>.<dataset>.<run_key>            1 (c) per failed shard
    helical.load.<model>.<device>.<host>                          1 (c) per model load (a process's first shard)
    helical.quality.<score>.<model>.<dataset>.<run_key>           (g) per quality gate: passed (1/0),
        mean_pairwise_cosine, knn_accuracy, silhouette, pca_knn_accuracy, pca_silhouette (with a label)

They become helical_embed_cells_total, helical_embed_cells_per_second,
helical_embed_shard_duration_seconds, ... with labels model, device, dataset, run_key (and code).
Fine-tuning sends its own after every epoch (helical.finetune.*, below): helical_finetune_*.
"""

from __future__ import annotations

import logging
import math
import re
import socket
from typing import Any

from . import modality, settings
from .errors import ConfigError
from .spec import Plan, QualityReport, ShardResult

log = logging.getLogger(__name__)

HOST_ENV = "HELICAL_AIRFLOW_STATSD_HOST"
PORT_ENV = "HELICAL_AIRFLOW_STATSD_PORT"
DEFAULT_PORT = 9125
PREFIX = "helical"
MB = 2**20


def label(value: object) -> str:
    """One name component: StatsD's separators (. : | @ # ,) and anything unusual become `_`."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", str(value)) or "unknown"


def _number(value: float) -> str:
    # never a leading sign: in a StatsD gauge, "+n" / "-n" means "change by n"
    return str(int(value)) if float(value).is_integer() else repr(round(float(value), 6))


def target() -> tuple[str, int] | None:
    """(host, port) from the environment, None when telemetry is off."""
    configured = settings.statsd_target()
    if configured is None:
        return None
    host, port = configured
    port = port or str(DEFAULT_PORT)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError("E604", f"{PORT_ENV}={port!r} is not a UDP port number", f"set {PORT_ENV}=9125 or unset it")
    return host, int(port)


def shard_lines(plan: Plan, result: ShardResult) -> list[str]:
    """The StatsD lines for one finished shard."""
    tail = ".".join(label(v) for v in (plan.params.model, result.device, plan.dataset, plan.run_key))
    metrics: list[tuple[str, float, str]] = [
        ("cells", result.cells, "c"),
        ("done", 1, "c"),
        ("seconds", result.seconds * 1000, "ms"),
        ("peak_rss_bytes", result.peak_rss_mb * MB, "g"),
    ]
    if result.seconds > 0:
        metrics.append(("cells_per_second", result.cells / result.seconds, "g"))
    if result.model_load_seconds > 0:  # 0: the model was already loaded in this process
        metrics.append(("model_load_seconds", result.model_load_seconds * 1000, "ms"))
    if result.peak_gpu_mb is not None:
        metrics.append(("peak_gpu_bytes", result.peak_gpu_mb * MB, "g"))
    metrics += modality.of(plan.input).shard_metrics(plan.input, result)  # records: sequences, nucleotides
    metrics.append(("memory_cap_bytes", plan.params.memory_cap_gb * 1024 * MB, "g"))  # the plan's cap (E305)
    return [f"{PREFIX}.shard.{name}.{tail}:{_number(value)}|{kind}" for name, value, kind in metrics]


def failure_lines(plan: Plan, code: str) -> list[str]:
    tail = ".".join(label(v) for v in (code, plan.params.model, plan.dataset, plan.run_key))
    return [f"{PREFIX}.failure.{tail}:1|c"]


def quality_lines(plan: Plan, report: QualityReport) -> list[str]:
    """The StatsD gauges of one quality gate (helical_quality_score{score=...})."""
    tail = ".".join(label(v) for v in (plan.params.model, plan.dataset, plan.run_key))
    values: dict[str, float] = {"passed": float(report.passed), "mean_pairwise_cosine": report.mean_pairwise_cosine}
    if report.embedding_scores and report.pca_scores:
        values |= {
            "knn_accuracy": report.embedding_scores.knn_accuracy,
            "silhouette": report.embedding_scores.silhouette,
            "pca_knn_accuracy": report.pca_scores.knn_accuracy,
            "pca_silhouette": report.pca_scores.silhouette,
        }
    # a gauge's value may not start with a sign ("-n" means "decrease by n"): send 0 first, then the change
    lines = []
    for name, value in values.items():
        metric = f"{PREFIX}.quality.{name}.{tail}"
        lines += [f"{metric}:0|g", f"{metric}:{value:+.6g}|g"] if value < 0 else [f"{metric}:{_number(value)}|g"]
    return lines


def emit_quality(plan: Plan, report: QualityReport) -> None:
    if target_is_set():
        send(quality_lines(plan, report))


def send(lines: list[str]) -> bool:
    """Send lines in one datagram to the configured StatsD; False when off or it could not be sent."""
    try:
        address = target()
    except ConfigError as exc:
        log.warning("runner metrics not sent: %s", exc.render())
        return False
    if address is None or not lines:
        return False
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto("\n".join(lines).encode(), address)
    except OSError as exc:  # unknown host, no route: metrics are best effort
        log.warning("runner metrics not sent to %s:%d: %s", *address, exc)
        return False
    return True


def emit_shard(plan: Plan, result: ShardResult) -> None:
    """cells embedded, cells/s, shard seconds, model load seconds, peak RSS, peak GPU memory."""
    if target_is_set():
        send(shard_lines(plan, result))


def load_lines(plan: Plan, device: str) -> list[str]:
    tail = ".".join(label(v) for v in (plan.params.model, device, socket.gethostname()))
    return [f"{PREFIX}.load.{tail}:1|c"]


def emit_model_load(plan: Plan, device: str) -> None:
    """One model load in an embed process (helical_model_loads_total{model, device, host})."""
    if target_is_set():
        send(load_lines(plan, device))


def emit_failure(plan: Plan, code: str) -> None:
    """One failure of a shard, by error code."""
    if target_is_set():
        send(failure_lines(plan, code))


def target_is_set() -> bool:
    return settings.statsd_target() is not None


# ---- fine-tuning (finetune.py's per-epoch callback; the helical_finetune DAG's train task) --------------------
#
#     helical.finetune.<metric>.<model>.<dataset>.<label_key>.<finetune_key>   (g) after every epoch: epoch,
#         epoch_seconds, train_cells_per_second, train_loss, val_loss, val_accuracy, val_macro_f1,
#         epochs_since_best (epochs since the best validation macro F1: early stopping's count)
#     helical.finetune_failure.<code>.<model>.<dataset>.<label_key>                1 (c) per failed training
#
# -> helical_finetune_epoch, helical_finetune_epoch_seconds, ... with labels model, dataset, label_key, finetune_key.


def epoch_lines(model: str, dataset: str, label_key: str, finetune_key: str, metrics: Any,
                epochs_since_best: int) -> list[str]:  # fmt: skip
    """The StatsD gauges of one finished epoch (`metrics`: finetune_spec.EpochMetrics)."""
    tail = ".".join(label(v) for v in (model, dataset, label_key, finetune_key))
    values: dict[str, float] = {
        "epoch": metrics.epoch,
        "epoch_seconds": metrics.seconds,
        "train_cells_per_second": metrics.train_cells_per_second,
        "train_loss": metrics.train_loss,
        "val_loss": metrics.val_loss,
        "val_accuracy": metrics.val_accuracy,
        "val_macro_f1": metrics.val_macro_f1,
        "epochs_since_best": epochs_since_best,
    }
    # losses and scores are never negative; a NaN (an epoch without a batch) is not sent: StatsD cannot carry it
    return [f"{PREFIX}.finetune.{name}.{tail}:{_number(v)}|g" for name, v in values.items() if math.isfinite(v)]


def emit_epoch(model: str, dataset: str, label_key: str, finetune_key: str, metrics: Any,
               epochs_since_best: int) -> None:  # fmt: skip
    if target_is_set():
        send(epoch_lines(model, dataset, label_key, finetune_key, metrics, epochs_since_best))


def finetune_failure_lines(code: str, model: str, dataset: str, label_key: str) -> list[str]:
    tail = ".".join(label(v) for v in (code, model, dataset, label_key))
    return [f"{PREFIX}.finetune_failure.{tail}:1|c"]


def emit_finetune_failure(code: str, model: str, dataset: str, label_key: str) -> None:
    """One failed training, by error code (helical_finetune_failures_total)."""
    if target_is_set():
        send(finetune_failure_lines(code, model, dataset, label_key))
