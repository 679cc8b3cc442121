"""
### helical_incoming_watcher
Runs `helical_model_workflow` on every `.h5ad` that lands in `<data folder>/incoming/`.

A deferrable file sensor waits in the triggerer (no worker slot is held), `claim_files` moves each
finished file to `incoming/accepted/` (so it is picked up exactly once), and one workflow run is
triggered per file with the workflow's default parameters. The DAG is continuous: as soon as one
round ends, the next starts waiting. Copy large files under another name and rename them into
`incoming/` when complete (or let `claim_files` wait until their size stops changing).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.providers.standard.sensors.filesystem import FileSensor
from airflow.sdk import DAG, task

from helical_airflow import airflow_tasks as steps

with DAG(
    dag_id="helical_incoming_watcher",
    dag_display_name="Helical: watch data/incoming",
    description="Trigger helical_model_workflow for each .h5ad dropped into data/incoming/",
    doc_md=__doc__,
    schedule="@continuous",
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,  # required by @continuous
    tags=["helical", "ingest"],
    default_args={
        "owner": "helical-airflow",
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": 2.0,
        "execution_timeout": timedelta(minutes=10),
    },
    is_paused_upon_creation=False,
) as dag:
    wait = FileSensor(
        task_id="wait_for_file",
        fs_conn_id="helical_data",  # an fs connection whose path is the data folder (set by both stacks)
        filepath="incoming/*.h5ad",
        deferrable=True,
        poke_interval=15,
        timeout=int(timedelta(hours=6).total_seconds()),
        soft_fail=True,  # nothing arrived: skip, and the next round starts waiting
        execution_timeout=timedelta(hours=6, minutes=10),  # the deferral counts: a little over `timeout`
    )

    @task
    def claim_files() -> list[dict[str, Any]]:
        return [{"input_path": path} for path in steps.claim_incoming("incoming")]

    claimed = claim_files()
    wait >> claimed
    TriggerDagRunOperator.partial(
        task_id="trigger_workflow",
        trigger_dag_id="helical_model_workflow",
        wait_for_completion=False,
    ).expand(conf=claimed)
