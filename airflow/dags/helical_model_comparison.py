"""
### helical_model_comparison
Which model for my data: embed one input with several models and rank them, with a PCA baseline, on the same
cells with scib-metrics (bio conservation; batch correction with a batch column), each model's cost beside its
score.

`plan_comparison` (models of another modality than the input are refused here, before any embedding: E1001) ->
`embed_each_model` (one run of `helical_model_workflow` per model, mapped: each on its profile's Celery queue and
pool, its finished shards reused by run key) -> `score_comparison`.

Outputs: `<output dir>/<dataset>/compare/<comparison_key>/` (comparison.json, comparison.html); with
MLFLOW_TRACKING_URI an MLflow parent run with a child per model; the scores as `helical_compare_score`.
docs/compare.md has the details.

This file is wiring only: the steps live in `helical_airflow.airflow_tasks` and `helical_airflow.compare`, and
nothing imported here loads helical or torch.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, task

from helical_airflow import airflow_tasks as steps
from helical_airflow import settings
from helical_airflow.dag_params import comparison_params, task_defaults
from helical_airflow.launchers.base import LAUNCHERS
from helical_airflow.models import MODELS

DAG_ID = "helical_model_comparison"
WORKFLOW_DAG_ID = "helical_model_workflow"

params = comparison_params(str(settings.data_dir()), list(MODELS), list(LAUNCHERS), settings.get().launcher,
                           default_models=["geneformer", "scgpt"])  # fmt: skip

with DAG(
    dag_id=DAG_ID,
    dag_display_name="Helical model comparison",
    description="Embed one input with several Helical models and rank them on the same cells (scib-metrics), "
    "cost beside score",
    doc_md=__doc__,
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    params=params,
    default_args=task_defaults(),
    tags=["helical", "compare", "single-cell"],
    max_active_runs=2,
    dagrun_timeout=timedelta(hours=48),
    is_paused_upon_creation=False,
) as dag:

    @task(execution_timeout=timedelta(minutes=30))
    def plan_comparison(**context: Any) -> list[dict[str, Any]]:
        """Write comparison_plan.json; returns helical_model_workflow's conf per model, the list the trigger maps
        over."""
        planned = steps.plan_comparison(dict(context["params"]))
        for key in ("plan_path", "comparison_key", "out_dir"):
            context["ti"].xcom_push(key=key, value=planned[key])
        return planned["confs"]

    planned = plan_comparison()
    embedded = TriggerDagRunOperator.partial(
        task_id="embed_each_model",
        trigger_dag_id=WORKFLOW_DAG_ID,
        wait_for_completion=True,  # the score needs every run finished
        deferrable=True,  # waits in the triggerer, not in a worker slot the workflow's shards need
        poke_interval=15,
        failed_states=["failed"],
        execution_timeout=timedelta(hours=24),
    ).expand(conf=planned)

    @task(execution_timeout=timedelta(hours=2))
    def score_comparison(plan_path: str) -> dict[str, Any]:
        return steps.score_comparison(plan_path)

    embedded >> score_comparison(planned["plan_path"])
