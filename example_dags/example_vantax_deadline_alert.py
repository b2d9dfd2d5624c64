"""
A deadline alert: text the on-call phone when the nightly run is still not done an hour after it was queued.

Airflow 3.1 replaced SLAs with deadline alerts.  The scheduler notices the missed deadline and
the triggerer runs the callback, here ``VantaxNotifier``: no worker slot, and the run goes on.
The callback's template context is the run (``dag_run``, as the REST API shows it: ``dag_id``,
``dag_run_id``, ``queued_at``...) and the ``deadline`` (``deadline_time``).

Trigger it with ``{"work_seconds": 4000}`` to see the alert (or shorten ``LATE_AFTER``).
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Param, task

try:
    from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference
except ImportError:  # Airflow 3.1 keeps them here (3.2 and later have both)
    from airflow.sdk.definitions.deadline import AsyncCallback, DeadlineAlert, DeadlineReference

from vantax_provider.notifications.vantax import VantaxNotifier

LATE_AFTER = timedelta(hours=1)

with DAG(
    dag_id="example_vantax_deadline_alert",
    schedule="0 2 * * *",
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["example", "vantax"],
    params={"work_seconds": Param(5, type="integer", minimum=0)},
    deadline=DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=LATE_AFTER,
        callback=AsyncCallback(
            VantaxNotifier,
            kwargs={
                "conversation_id": "conv_oncall",
                "channel": "sms",
                "from_phone_number_id": "pn_alerts",
                "content": "{{ dag_run.dag_id }} is late: run {{ dag_run.dag_run_id }} "
                "is not done by {{ deadline.deadline_time }}.",
            },
        ),
    ),
    doc_md=__doc__,
) as dag:

    @task
    def nightly_load(params: dict[str, Any] | None = None) -> None:
        time.sleep(int((params or {}).get("work_seconds", 5)))  # stands in for the real work

    nightly_load()
