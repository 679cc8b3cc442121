"""
### helical_incoming_watcher
Runs `helical_model_workflow` on every input that lands in `<data folder>/incoming/`: `.h5ad`, and FASTA
(`.fa`/`.fasta`/`.fna`, gzip too), `.csv`, `.tsv` or `.parquet` for the sequence models.

A sensor in reschedule mode looks every 15 s (no worker slot is held in between), `claim_files` moves each
finished file to `incoming/accepted/` (so it is picked up exactly once), and one workflow run is
triggered per file. Its parameters: `<name>.json` beside the file (e.g. `{"layer": "counts"}`), over the
defaults of the folder it was dropped in (`incoming/<folder>/params.json`; a folder named like a model,
e.g. `incoming/scgpt/`, picks that model), validated by the workflow's own Params. A file with invalid
parameters, or whose run fails, moves to `incoming/failed/` with `<name>.error.txt` beside it.
The DAG is continuous: as soon as one round ends, the next starts waiting. Copy large files under another
name and rename them into
`incoming/` when complete (or let `claim_files` wait until their size stops changing).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, task

from helical_airflow import settings, watcher

WORKFLOW_DAG_FILE = Path(__file__).with_name("helical_model_workflow.py")

with DAG(
    dag_id="helical_incoming_watcher",
    dag_display_name="Helical: watch data/incoming",
    description="Trigger helical_model_workflow for each input (.h5ad, FASTA, table) dropped into data/incoming/",
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

    @task.sensor(
        task_id="wait_for_file",
        poke_interval=15,
        timeout=int(timedelta(hours=6).total_seconds()),
        mode="reschedule",  # no worker slot is held between pokes
        soft_fail=True,  # nothing arrived: skip, and the next round starts waiting
        execution_timeout=timedelta(hours=6, minutes=10),
    )
    def wait_for_file() -> bool:
        """An input file in incoming/ or one folder down (incoming/<folder>/), not in accepted/ or failed/."""
        return bool(watcher.pending(settings.data_dir() / "incoming"))

    wait = wait_for_file()

    @task
    def claim_files() -> list[dict[str, Any]]:
        return watcher.claim(WORKFLOW_DAG_FILE, "incoming")

    claimed = claim_files()
    wait >> claimed
    TriggerDagRunOperator.partial(
        task_id="trigger_workflow",
        trigger_dag_id="helical_model_workflow",
        wait_for_completion=False,
    ).expand(conf=claimed)
