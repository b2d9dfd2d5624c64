"""
A pipeline-completion alert: the notifier reports success of the whole run, and the failure of any task.

Trigger with ``{"fail": true}`` to see the failure alert.  The texts name the run with ``{{ run_id }}``,
not ``{{ ds }}``: a run triggered by hand (UI or REST API) may have no logical date, and then
``ds`` is undefined and the alert would fail to render.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Param, task

from vantax_provider.notifications.vantax import VantaxNotifier

ALERTS = {"conversation_id": "{{ params.alert_conversation_id }}", "channel": "facebook"}

with DAG(
    dag_id="example_vantax_pipeline_alert",
    schedule="@daily",
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["example", "vantax"],
    params={"alert_conversation_id": Param("conv_data_alerts", type="string"), "fail": False},
    on_success_callback=VantaxNotifier(
        **ALERTS, content="{{ dag.dag_id }} finished: all tasks succeeded (run {{ run_id }})."
    ),
    default_args={
        "on_failure_callback": VantaxNotifier(
            **ALERTS,
            content="{{ dag.dag_id }} failed: task {{ ti.task_id }} (try {{ ti.try_number }}), "
            "run {{ run_id }}.",
        ),
    },
    doc_md=__doc__,
) as dag:

    @task
    def extract() -> list[int]:
        return [3, 1, 2]

    @task
    def load(rows: list[int], params: dict | None = None) -> int:  # type: ignore[type-arg]
        if params and params.get("fail"):
            raise RuntimeError("The warehouse refused the load (simulated).")
        return len(rows)

    load(extract())
