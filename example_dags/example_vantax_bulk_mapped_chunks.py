"""
Bulk outreach spread over workers: the recipient list is cut into chunks and each chunk is sent
by one mapped ``VantaxBulkSendMessageOperator`` task.

One bulk task already sends hundreds of messages a second; mapping over chunks is for lists so
large that you want several workers (or smaller retries: a failed chunk retries alone, and
skips the recipients it already sent).  Each chunk's messages get their own idempotency keys,
because the mapped task's ``map_index`` is part of them.

The message fields are rendered per recipient by the operator (``recipient`` is one CSV row),
with the task context available too (``params`` here).  Run it against the local emulator::

    python -m vantax_provider.emulator --port 8765   # then set AIRFLOW_CONN_VANTAX_DEFAULT
"""

from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Param, task

from vantax_provider.operators.vantax import VantaxBulkSendMessageOperator

RECIPIENTS_CSV = Path(__file__).parent / "data" / "bulk_recipients.csv"

with DAG(
    dag_id="example_vantax_bulk_mapped_chunks",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["example", "vantax"],
    params={
        "chunk_size": Param(10, type="integer", minimum=1),
        "from_phone_number_id": Param("pn_outreach", type="string"),
    },
    doc_md=__doc__,
) as dag:

    @task
    def load_recipients() -> list[dict[str, Any]]:
        """In real life a query; here a small CSV shipped with the example."""
        with RECIPIENTS_CSV.open(newline="") as handle:
            return list(csv.DictReader(handle))

    @task
    def chunk(
        recipients: list[dict[str, Any]], params: dict[str, Any] | None = None
    ) -> list[list[dict[str, Any]]]:
        size = int((params or {}).get("chunk_size", 10))
        return [recipients[i : i + size] for i in range(0, len(recipients), size)]

    send = VantaxBulkSendMessageOperator.partial(
        task_id="send_chunk",
        conversation_id="{{ recipient.conversation_id }}",
        channel="sms",
        from_phone_number_id="{{ params.from_phone_number_id }}",
        content="Hi {{ recipient.first_name }}, your {{ recipient.plan }} plan renews next month.",
        max_concurrency=16,
        max_failure_ratio=0.05,
        retries=2,
    ).expand(recipients=chunk(load_recipients()))

    @task
    def report(results: list[dict[str, Any]]) -> dict[str, int]:
        # One read of every chunk's result: iterating the lazy sequence reads them one at a time
        # and ends on a not-found read, which Airflow logs as an error.
        rows = results[:]
        keys = ("total", "sent", "failed", "invalid", "skipped_already_sent")
        totals = {key: sum(int(r[key]) for r in rows) for key in keys}
        print(f"Outreach over {len(rows)} chunks: {totals}")
        return totals

    report(send.output)
