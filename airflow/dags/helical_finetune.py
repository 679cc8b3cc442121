"""
### helical_finetune
Fine-tune a Helical model's own `*FineTuningModel` on a labelled `.h5ad` in the data folder, and register it in
MLflow's Model Registry.

`validate` -> `plan` -> `tokenise_shard` (one mapped task per shard: helical's `process_data` into Arrow datasets
on disk) -> `route_to_queue` -> `train` (on the Celery queue and pool of the model's resource profile; a checkpoint
after every epoch, so a retry of a killed task resumes after its last finished epoch and ends with the weights an
undisturbed run ends with) -> `evaluate` (validation scores against the majority-class rate) -> `register` (a new
version of `helical-<family>-<label>`, alias `champion` when at least as good; emits the `helical_finetuned_models`
asset event).

Output: `<output dir>/<dataset>/finetune/<label>/<finetune_key>/` (model.pt, finetune.json, split.json,
report.html), the same folder `helical-airflow finetune` writes: triggering the same input and parameters again
trains nothing. Per-epoch loss, validation accuracy, epoch seconds and training cells/s go to Prometheus
(helical_finetune_*). docs/finetune.md has the details.

This file is wiring only: the steps live in `helical_airflow.finetune_tasks`, and nothing imported here loads
helical or torch.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Asset, TriggerRule, get_current_context, task

from helical_airflow import finetune_tasks as steps
from helical_airflow import settings
from helical_airflow.dag_params import finetune_form, task_defaults
from helical_airflow.models import MODELS, registry
from helical_airflow.spec import DEFAULT_MODEL

DAG_ID = "helical_finetune"
#: registered fine-tuned models, for DAGs that want to react to a new version
FINETUNED = Asset(name="helical_finetuned_models", uri=f"file://{settings.output_dir()}/finetune")

#: the models whose family has a fine-tuning class here (the family's `finetune` in the model registry)
FINETUNABLE = [name for name, spec in MODELS.items() if registry.FAMILIES[spec.family].finetune]
#: (queue, pool) pairs of those models' profiles: one train task each
ROUTES = sorted({(MODELS[name].profile.queue, MODELS[name].profile.pool) for name in FINETUNABLE})


def _train_task_id(queue: str) -> str:
    return "train" if queue == "default" else f"train_{queue}"


default_args = task_defaults()

with DAG(
    dag_id=DAG_ID,
    dag_display_name="Helical fine-tuning",
    description="Fine-tune a Helical model on a labelled .h5ad: validate, tokenise shards, train with per-epoch "
    "checkpoints, evaluate, register in MLflow",
    doc_md=__doc__,
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    params=finetune_form(
        str(settings.data_dir()), FINETUNABLE, DEFAULT_MODEL if DEFAULT_MODEL in FINETUNABLE else FINETUNABLE[0]
    ),  # fmt: skip
    default_args=default_args,
    tags=["helical", "fine-tuning", "mlflow"],
    max_active_runs=2,
    dagrun_timeout=timedelta(hours=48),
    is_paused_upon_creation=False,  # runs only when triggered
) as dag:

    @task(execution_timeout=timedelta(minutes=20))
    def validate(**context: Any) -> dict[str, Any]:
        return steps.validate(dict(context["params"]))

    @task(execution_timeout=timedelta(minutes=10))
    def plan(validated: dict[str, Any], **context: Any) -> list[dict[str, Any]]:
        """Write plan.json; pushes the plan (XCom `planned`) and returns the tokenise task's list, one per shard."""
        planned = steps.plan(dict(context["params"]), validated)
        context["ti"].xcom_push(key="planned", value=planned)
        return [{"planned": planned, "shard": shard} for shard in planned["shards"]]

    @task(execution_timeout=timedelta(hours=1), map_index_template="{{ shard_label }}")
    def tokenise_shard(planned: dict[str, Any], shard: int, **context: Any) -> dict[str, Any]:
        get_current_context()["shard_label"] = f"shard {shard}"  # type: ignore[typeddict-unknown-key]
        return steps.tokenise_shard(dict(context["params"]), planned, shard)

    @task.branch(execution_timeout=timedelta(minutes=5))
    def route_to_queue(planned: dict[str, Any]) -> str:
        """Follow the train task on the Celery queue (and pool) of the model's resource profile."""
        return _train_task_id(planned["queue"])

    shards = plan(validate())
    planned = shards["planned"]
    tokenised = tokenise_shard.expand_kwargs(shards)
    routed = route_to_queue(planned)
    tokenised >> routed
    trained = []
    for queue, pool in ROUTES:

        @task(task_id=_train_task_id(queue), queue=queue, pool=pool, execution_timeout=timedelta(hours=24))
        def train(planned: dict[str, Any], **context: Any) -> str:
            return str(steps.train(dict(context["params"]), planned)["folder"])

        branch = train(planned)
        routed >> branch
        trained.append(branch)

    @task(trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS, execution_timeout=timedelta(minutes=10))
    def evaluate(planned: dict[str, Any]) -> dict[str, Any]:
        return steps.evaluate(planned["folder"])

    @task(execution_timeout=timedelta(minutes=30), outlets=[FINETUNED])
    def register(evaluated: dict[str, Any], **context: Any) -> dict[str, Any]:
        record = steps.register(evaluated["folder"])
        context["outlet_events"][FINETUNED].extra = {**record, **evaluated}
        return record

    evaluated = evaluate(planned)
    trained >> evaluated
    register(evaluated)
