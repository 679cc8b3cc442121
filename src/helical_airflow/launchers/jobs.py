"""What a launcher runs over a group of shards: a job, one name per role.

    embed    helical-airflow embed-shard --plan P --shard I ...
             -> shards/<i>.npy + shards/<i>.json (store.finished_result)
    predict  helical-airflow predict-shard --plan P --classifier SOURCE --shard I ...
             -> predictions/<finetune_key>/<i>.npy (a fine-tuned model's class probabilities, annotate_finetuned)

Each job's kind (JOBS) holds its command and how a shard's result is read back from the run folder (None: not
finished; what run_until_done, a recycled process's successor and E512 go by). The launchers (local, docker,
kubernetes) take a Job and never ask which one it is: recycling, the memory cap, the GPU lease and on_kill are
the same code path for both. Both commands load their model once per group and write each shard atomically.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import HelicalAirflowError
from ..spec import Plan
from ..store import finished_result

PREDICTIONS = "predictions"  # <run folder>/predictions/<finetune_key>/<shard:05d>.npy


def prediction_file(plan: Plan, finetune_key: str, index: int) -> Path:
    """Where a fine-tuned model's probabilities for shard `index` of the plan are written (and read back)."""
    return plan.out_path / PREDICTIONS / finetune_key / f"{index:05d}.npy"


@dataclass(frozen=True)
class JobKind:
    """One role a launched process can have."""

    name: str
    subcommand: str  # the helical-airflow command the process runs
    result_name: str  # what a shard's result is called in messages
    label: str  # container and pod names: helical-<run>-<label><shard>
    options: Callable[[Job], list[str]]  # its options besides --plan and --shard
    read: Callable[[Plan, int, Job], dict[str, Any] | None]  # a finished shard's result; None: not finished
    adapts_batch: bool  # a retry after the memory cap runs with half the plan's batch size (store.batch_size)
    requires: tuple[str, ...] = ()  # the Job fields it cannot run without


@dataclass(frozen=True)
class Job:
    """A job to launch: its kind's name and, for `predict`, the fine-tuned model (its source as predict-shard
    resolves it, and its finetune key: the folder the predictions land in)."""

    name: str = "embed"
    classifier: str = ""
    finetune_key: str = ""

    def __post_init__(self) -> None:
        if self.name not in JOBS:
            raise HelicalAirflowError("E517", f"unknown launcher job {self.name!r}", f"use one of: {', '.join(JOBS)}")
        missing = [field for field in JOBS[self.name].requires if not getattr(self, field)]
        if missing:
            raise HelicalAirflowError(
                "E517", f"launcher job {self.name!r} without its {' and '.join(missing)}",
                "build a predict job with launchers.jobs.predict(source, finetune_key)",
            )  # fmt: skip

    @property
    def kind(self) -> JobKind:
        return JOBS[self.name]

    def command(self, plan_path: str, shards: Sequence[int], program: str = "helical-airflow") -> list[str]:
        """The command line that runs this job over these shards of the plan, loading the model once."""
        shard_args = (a for i in shards for a in ("--shard", str(i)))
        return [program, self.kind.subcommand, "--plan", str(plan_path), *self.kind.options(self), *shard_args]

    def result(self, plan: Plan, index: int) -> dict[str, Any] | None:
        """Shard `index`'s result from the run folder, None while it is not finished."""
        return self.kind.read(plan, index, self)


def _embedded(plan: Plan, index: int, job: Job) -> dict[str, Any] | None:
    found = finished_result(plan, index)
    return found.model_dump() if found is not None else None


def finished_prediction(plan: Plan, finetune_key: str, index: int) -> Path | None:
    """The shard's prediction file when finished: there with one row per cell of the shard (written atomically:
    never half), else None."""
    path = prediction_file(plan, finetune_key, index)
    if not 0 <= index < len(plan.shards) or not path.is_file():
        return None
    try:
        rows = np.load(path, mmap_mode="r").shape[0]
    except (ValueError, OSError):
        return None  # a damaged file is predicted again, never trusted
    return path if rows == plan.shards[index].cells else None


def _predicted(plan: Plan, index: int, job: Job) -> dict[str, Any] | None:
    path = finished_prediction(plan, job.finetune_key, index)
    return None if path is None else {"index": index, "cells": plan.shards[index].cells, "path": str(path)}


def _no_options(job: Job) -> list[str]:
    return []


def _classifier_option(job: Job) -> list[str]:
    return ["--classifier", job.classifier]


JOBS: dict[str, JobKind] = {
    kind.name: kind
    for kind in (
        JobKind("embed", "embed-shard", "finished result", "shard", _no_options, _embedded, adapts_batch=True),
        # predict_proba batches by itself (finetune.Classifier): the plan's batch size does not bound its memory
        JobKind(
            "predict",
            "predict-shard",
            "predictions",
            "predict",
            _classifier_option,
            _predicted,
            adapts_batch=False,
            requires=("classifier", "finetune_key"),
        ),  # fmt: skip
    )
}

EMBED = Job()


def predict(classifier: str, finetune_key: str) -> Job:
    """The predict job for a fine-tuned model: `classifier` is a folder the launched process can read or a pinned
    models:/NAME/VERSION; `finetune_key` its key (annotate_finetuned.Resolved.result.finetune_key)."""
    return Job("predict", classifier, finetune_key)
