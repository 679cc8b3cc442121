"""
### helical_model_workflow
Embed every cell of a `.h5ad` (or, with a sequence model, every record of a FASTA / CSV / TSV / Parquet file) in
the data folder with a Helical foundation model, shard by shard.

`validate_input` -> `plan_shards` -> `route_to_queue` -> `embed_shard` (one mapped task per group of shards:
a process, container or pod of its own through the chosen launcher, loading the model once for the group and
checkpointing every shard) -> `merge` -> `quality_gate` -> `publish`.

Shards run on the Celery queue and pool of the model's resource profile: `route_to_queue` follows
`embed_shard` (queue `default`) or `embed_shard_gpu` (queue `gpu`, pool `gpu_pool`); the other is skipped.
Outputs: `<output dir>/<dataset>/<run_key>/` (embeddings.h5ad, manifest.json, report.html);
`<dataset>/latest` points at the newest published run. Triggering the same input and parameters
again reuses every finished shard.

This file is wiring only: the steps live in `helical_airflow.airflow_tasks`, and nothing imported
here loads helical or torch.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Asset, Param, TriggerRule, get_current_context, task

from helical_airflow import airflow_tasks as steps
from helical_airflow import settings
from helical_airflow.launchers.base import LAUNCHERS
from helical_airflow.models import MODELS
from helical_airflow.watcher import move_failed_input

DAG_ID = "helical_model_workflow"
DATA_DIR = str(settings.data_dir())
#: published runs, for DAGs that want to react to new embeddings
EMBEDDINGS = Asset(name="helical_embeddings", uri=f"file://{settings.output_dir()}")


def _regex_literal(text: str) -> str:
    # re.escape would also escape `-` and `/`, which JavaScript's unicode regexes (the UI form) reject
    return re.sub(r"([.^$*+?()\[\]{}|\\])", r"\\\1", text)


#: a path inside the data folder: relative (sample.h5ad) or absolute under it, never `..`, ending in .h5ad or, for
#: the sequence models, .fa/.fasta/.fna (optionally .gz), .csv, .tsv or .parquet (seqio.py)
INPUT_PATTERN = (
    rf"^(?!.*(?:^|/)\.\.(?:/|$))(?:{_regex_literal(DATA_DIR)}/)?[^/].*"
    r"\.(?:h5ad|fa|fasta|fna|fa\.gz|fasta\.gz|fna\.gz|csv|tsv|parquet)$"
)


def _embed_task_id(queue: str) -> str:
    return "embed_shard" if queue == "default" else f"embed_shard_{queue}"


#: (queue, pool) pairs the model table uses: one mapped embed task each
ROUTES = sorted({(spec.profile.queue, spec.profile.pool) for spec in MODELS.values()})

params = {
    "input_path": Param(
        "sample.h5ad",
        type="string",
        pattern=INPUT_PATTERN,
        title="Input file",
        description=f"Path of the .h5ad (sequence models: .fa/.fasta/.fna[.gz], .csv, .tsv, .parquet) inside the data "
        f"folder ({DATA_DIR}), e.g. `sample.h5ad` or `sample_dna.fa`.",
        # a refused value answers HTTP 400 quoting the schema: this key (ajv-errors' name) reads like the CLI's errors
        errorMessage=f"error E513: input_path must end in .h5ad (or, for sequence models, .fa/.fasta/.fna[.gz], "
        f".csv, .tsv, .parquet) and stay inside the data folder {DATA_DIR} (no `..`, "
        "no other absolute path); fix: copy the file into the data folder and give its path relative to it, "
        "e.g. sample.h5ad",
    ),
    "model": Param(
        "geneformer",
        type="string",
        enum=list(MODELS),
        title="Model",
        description="A model name from `helical-airflow models list`; family names pick the family's default.",
        errorMessage="error E201: unknown model name; fix: use one of the names `helical-airflow models list` prints",
    ),
    "shard_size": Param(
        1000,
        type="integer",
        minimum=1,
        maximum=1_000_000,
        title="Shard size",
        description="Cells (sequence inputs: records) per shard (each checkpointed on its own; a task embeds a group "
        "of shards with one model load). Worker memory follows this, not the file size.",
    ),  # fmt: skip
    "device": Param(
        "auto",
        type="string",
        enum=["auto", "cpu", "cuda"],
        title="Device",
        description="auto: CUDA when the worker has a GPU, else CPU.",
    ),  # fmt: skip
    # optional text fields, not enums: an enum with None shows a literal "null" in the trigger form, and a required
    # field holding "" makes the form refuse its own defaults (both seen in tests/e2e/test_browser.py)
    "precision": Param(
        None,
        type=["null", "string"],
        pattern="^(fp32|fp16|bf16)$",
        title="Precision",
        description="On GPU; empty: the model's profile. CPU always runs fp32.",
    ),  # fmt: skip
    "batch_size": Param(
        None,
        type=["null", "integer"],
        minimum=1,
        title="Batch size",
        description="Cells per forward pass; empty: the model's profile.",
    ),  # fmt: skip
    "memory_cap_gb": Param(
        None,
        type=["null", "number"],
        exclusiveMinimum=0,
        title="Memory cap (GB)",
        description="Memory one embed process may use; past it the shard stops with E305 and the retry halves "
        "the batch size. Empty: the model's profile.",
    ),  # fmt: skip
    "layer": Param(
        None,
        type=["null", "string"],
        title="Counts layer",
        description="Layer holding raw integer counts; empty: X.",
    ),  # fmt: skip
    "engine": Param(
        None,
        type=["null", "string"],
        pattern="^(helical|fast)$",
        title="Engine",
        description="fast (same embeddings as helical, faster forward pass) or helical (its get_embeddings); "
        "empty: the model's profile (fast for Geneformer and scGPT).",
    ),  # fmt: skip
    # numpy takes 32-bit seeds: a larger one used to pass here and fail all 3 embed attempts (bench/load.py found it)
    "seed": Param(0, type="integer", minimum=0, maximum=2**32 - 1, title="Seed",
                  description="Random seed for anything stochastic (0 to 4294967295)."),  # fmt: skip
    steps.MODEL_OPTIONS_PARAM: Param(
        {},
        type="object",
        title="Model options",
        description="Options that change the embedding, as {\"name\": \"value\"}: e.g. {\"species\": \"mouse\"} "
        "for UCE. Each family's options: docs/models.md. Empty: the family's defaults.",
    ),  # fmt: skip
    # sequence models (FASTA / CSV / TSV / Parquet inputs); null: the family's default; ignored for single-cell models
    "sequence_column": Param(None, type=["null", "string"], title="Sequence column",
                             description="Sequence tables: the column holding the sequences (default: sequence)."),
    "id_column": Param(None, type=["null", "string"], title="Id column",
                       description="Sequence tables: the column holding each record's id (default: id)."),
    "too_long": Param(None, type=["null", "string"], pattern="^(error|truncate|window)$",
                      title="Too-long sequences",
                      description="A sequence longer than the model's context: error (default), truncate, or window "
                      "(context-long windows, embeddings mean-pooled; recorded in the manifest)."),
    "label_key": Param(
        None,
        type=["null", "string"],
        title="Label column",
        description="obs column of cell labels: the quality gate scores the embeddings against it (kNN label "
        "transfer, silhouette, vs a PCA baseline) and the report colours by it. Empty: a guess (e.g. cell_type "
        "before louvain), named in the report.",
    ),  # fmt: skip
    "launcher": Param(
        os.environ.get("HELICAL_AIRFLOW_LAUNCHER", "local"),
        type="string",
        enum=list(LAUNCHERS),
        title="Launcher",
        description="local: a subprocess on the worker; docker: a container (DockerOperator); kubernetes: a pod "
        "(KubernetesPodOperator). One per group of shards.",
    ),  # fmt: skip
}

default_args: dict[str, Any] = {
    "owner": "helical-airflow",
    # a failed run of a file the watcher claimed parks it in incoming/failed/ with the error beside it
    "on_failure_callback": move_failed_input,
    "retries": 2,
    "retry_delay": timedelta(seconds=20),
    "retry_exponential_backoff": 2.0,  # 20 s, 40 s, ...
    "max_retry_delay": timedelta(minutes=10),
    "execution_timeout": timedelta(minutes=30),
}

with DAG(
    dag_id=DAG_ID,
    dag_display_name="Helical model workflow",
    description="Embed a .h5ad or sequence file with a Helical model: validate, shard, embed on Celery workers, merge, "
    "check, publish",
    doc_md=__doc__,
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    params=params,
    default_args=default_args,
    tags=["helical", "embeddings", "single-cell"],
    max_active_runs=4,
    dagrun_timeout=timedelta(hours=24),
    is_paused_upon_creation=False,  # runs only when triggered, so it can start unpaused
) as dag:

    @task(execution_timeout=timedelta(minutes=20))
    def validate_input(**context: Any) -> dict[str, Any]:
        return steps.validate_input(dict(context["params"]))

    @task(execution_timeout=timedelta(minutes=10))
    def plan_shards(summary: dict[str, Any], **context: Any) -> list[dict[str, Any]]:
        """Write plan.json; returns one {plan_path, shards} per group of shards, the list the embed task maps over."""
        plan = steps.plan_shards(dict(context["params"]), summary)
        for key in ("plan_path", "queue", "run_key", "out_dir"):
            context["ti"].xcom_push(key=key, value=plan[key])
        return [{"plan_path": plan["plan_path"], "shards": group} for group in plan["groups"]]

    @task.branch(execution_timeout=timedelta(minutes=5))
    def route_to_queue(queue: str) -> str:
        """Follow the embed task on the Celery queue (and pool) of the model's resource profile."""
        return _embed_task_id(queue)

    planned = plan_shards(validate_input())
    routed = route_to_queue(planned["queue"])
    embedded = []
    for queue, pool in ROUTES:

        @task(
            task_id=_embed_task_id(queue),
            queue=queue,
            pool=pool,
            execution_timeout=timedelta(hours=4),
            map_index_template="{{ shard_label }}",
            max_active_tis_per_dagrun=32,
        )
        def embed_group(plan_path: str, shards: list[int], **context: Any) -> list[dict[str, Any]]:
            label = f"shard {shards[0]}" if len(shards) == 1 else f"shards {shards[0]}-{shards[-1]}"
            get_current_context()["shard_label"] = label  # type: ignore[typeddict-unknown-key]
            return steps.launch_shards(plan_path, shards, context["params"]["launcher"])

        shards = embed_group.expand_kwargs(planned)
        routed >> shards
        embedded.append(shards)

    @task(trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS, execution_timeout=timedelta(hours=1))
    def merge(plan_path: str) -> dict[str, Any]:
        return steps.merge(plan_path)

    @task(execution_timeout=timedelta(minutes=30))
    def quality_gate(plan_path: str, **context: Any) -> dict[str, Any]:
        return steps.quality_gate(plan_path, context["params"].get("label_key") or None)

    @task(execution_timeout=timedelta(minutes=30), outlets=[EMBEDDINGS])
    def publish(plan_path: str, **context: Any) -> dict[str, Any]:
        outputs = steps.publish(plan_path)
        context["outlet_events"][EMBEDDINGS].extra = outputs
        return outputs

    merged = merge(planned["plan_path"])
    embedded >> merged
    merged >> quality_gate(planned["plan_path"]) >> publish(planned["plan_path"])
