"""
### helical_model_workflow
Embed every cell of a `.h5ad` (or, with a sequence model, every record of a FASTA / CSV / TSV / Parquet file) in
the data folder with a Helical foundation model, shard by shard.

`validate_input` -> `plan_shards` -> `route_to_queue` -> `embed_shard` (one mapped task per group of shards:
a process, container or pod of its own through the chosen launcher, loading the model once for the group and
checkpointing every shard) -> `merge` -> `quality_gate` -> `publish`.

Annotation, when asked for (otherwise these tasks skip): -> `plan_annotation` -> `predict_shards` (one mapped task
per group of shards, with a fine-tuned model: `annotate_classifier` = models:/NAME@ALIAS or a model folder; its
predict process, container or pod through the chosen launcher, on the model's queue and pool like the embed task:
`predict_shards` or `predict_shards_gpu`, the other skipped by `route_to_queue`) -> `annotate` (merges the
predictions; or, with `annotate_reference` and `label_key`, fits a kNN classifier on the reference's embeddings):
annotations.h5ad, annotation.json and annotation.html in the run folder.

Shards run on the Celery queue and pool of the model's resource profile: `route_to_queue` follows
`embed_shard` (queue `default`) or `embed_shard_gpu` (queue `gpu`, pool `gpu_pool`); the other is skipped.
Outputs: `<output dir>/<dataset>/<run_key>/` (embeddings.h5ad, manifest.json, report.html);
`<dataset>/latest` points at the newest published run. Triggering the same input and parameters
again reuses every finished shard. With the `output` Param an object storage URL (s3://BUCKET/PREFIX), the run
goes to `<URL>/<dataset>/<run_key>/` (`<dataset>/latest.json` names the newest): each task works in its own
worker's work folder and hands on the plan's URL, so any worker can take any step.

This file is wiring only: the steps live in `helical_airflow.airflow_tasks`, and nothing imported
here loads helical or torch.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Asset, TriggerRule, get_current_context, task

from helical_airflow import airflow_tasks as steps
from helical_airflow import settings
from helical_airflow.dag_params import task_defaults, workflow_params
from helical_airflow.launchers.base import LAUNCHERS
from helical_airflow.launchers.lifecycle import embed_task
from helical_airflow.models import MODELS
from helical_airflow.watcher import move_failed_input

DAG_ID = "helical_model_workflow"
DATA_DIR = str(settings.data_dir())
#: published runs, for DAGs that want to react to new embeddings
EMBEDDINGS = Asset(name="helical_embeddings", uri=f"file://{settings.output_dir()}")


def _embed_task_id(queue: str) -> str:
    return "embed_shard" if queue == "default" else f"embed_shard_{queue}"


def _predict_task_id(queue: str) -> str:
    return "predict_shards" if queue == "default" else f"predict_shards_{queue}"


#: (queue, pool) pairs the model table uses: one mapped embed task each
ROUTES = sorted({(spec.profile.queue, spec.profile.pool) for spec in MODELS.values()})


def _shard_task(task_id: str, queue: str, pool: str) -> Any:
    """A mapped task over groups of shards on this route's queue and pool, with an on_kill (embed_task): a killed or
    timed-out task stops the process, container or pod it launched; the map index shows the group's shards."""
    return embed_task(task_id=task_id, queue=queue, pool=pool, execution_timeout=timedelta(hours=4),
                      map_index_template="{{ shard_label }}", max_active_tis_per_dagrun=32)  # fmt: skip


def _label_group(shards: list[int]) -> None:
    """The map index the UI shows for this task's group of shards."""
    label = f"shard {shards[0]}" if len(shards) == 1 else f"shards {shards[0]}-{shards[-1]}"
    get_current_context()["shard_label"] = label  # type: ignore[typeddict-unknown-key]


#: the trigger form, generated from the run's contract (RunParams' schema, the sequence models' options, the model
#: table, the launchers, the modalities' input suffixes): helical_airflow/dag_params.py
params = workflow_params(DATA_DIR, list(MODELS), list(LAUNCHERS), settings.get().launcher)

# a failed run of a file the watcher claimed parks it in incoming/failed/ with the error beside it
default_args = task_defaults(on_failure_callback=move_failed_input)

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
    def route_to_queue(queue: str) -> list[str]:
        """Follow the embed and predict tasks on the Celery queue (and pool) of the model's resource profile."""
        return [_embed_task_id(queue), _predict_task_id(queue)]

    planned = plan_shards(validate_input())
    routed = route_to_queue(planned["queue"])
    embedded = []
    for queue, pool in ROUTES:

        @_shard_task(_embed_task_id(queue), queue, pool)
        def embed_group(plan_path: str, shards: list[int], **context: Any) -> list[dict[str, Any]]:
            _label_group(shards)
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

    # annotation (optional: annotate_reference or annotate_classifier; without them these three tasks skip)
    @task(execution_timeout=timedelta(minutes=10))
    def plan_annotation(plan_path: str, **context: Any) -> list[dict[str, Any]]:
        """The query's shard groups to predict with a fine-tuned model; none for a reference or no annotation."""
        return steps.plan_annotation(dict(context["params"]), plan_path)

    predicted = []
    for queue, pool in ROUTES:
        # like embed_group: the predict process, container or pod runs through the launcher, on the model's queue
        @_shard_task(_predict_task_id(queue), queue, pool)
        def predict_group(plan_path: str, shards: list[int], classifier: str, **context: Any) -> list[dict[str, Any]]:
            _label_group(shards)
            return steps.predict_shards(dict(context["params"]), plan_path, shards, classifier)

        predicted.append(predict_group)

    @task(trigger_rule=TriggerRule.NONE_FAILED, execution_timeout=timedelta(hours=2))
    def annotate(plan_path: str, groups: list[dict[str, Any]], **context: Any) -> dict[str, Any]:
        """annotations.h5ad, annotation.json, annotation.html in the run folder (skips without annotate_* Params)."""
        return steps.annotate_query(dict(context["params"]), plan_path, groups)

    merged = merge(planned["plan_path"])
    embedded >> merged
    published = publish(planned["plan_path"])
    merged >> quality_gate(planned["plan_path"]) >> published
    groups = plan_annotation(planned["plan_path"])
    published >> groups
    annotated = annotate(planned["plan_path"], groups)
    for predict_group in predicted:
        mapped = predict_group.expand_kwargs(groups)
        routed >> mapped >> annotated
