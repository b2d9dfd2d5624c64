"""
Data-triggered outreach: when the contacts asset is updated, send each contact a personalised message.

The contacts live in ``data/contacts.csv`` beside this file.  Each message is built in Python and
passed through XCom, so a name such as ``{{ x }}`` is sent literally, never rendered.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG, Asset, task

from vantax_provider.operators.vantax import VantaxSendMessageOperator

CONTACTS = Path(__file__).parent / "data" / "contacts.csv"
contacts_asset = Asset("vantax_example_contacts")

with DAG(
    dag_id="example_vantax_outreach",
    schedule=[contacts_asset],
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["example", "vantax"],
    doc_md=__doc__,
) as dag:

    @task
    def personalise() -> list[dict[str, str]]:
        import csv

        with CONTACTS.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        messages = []
        for row in rows:
            message = {
                "conversation_id": row["conversation_id"],
                "channel": row["channel"],
                "content": f"Hi {row['first_name']}, your {row['plan']} plan renews next week.",
            }
            if row["channel"] in ("sms", "whatsapp"):
                message["from_phone_number_id"] = row["from_phone_number_id"]
            if row["channel"] == "email":
                message["subject"] = f"Your {row['plan']} plan"
            messages.append(message)
        return messages

    # One mapped task instance per contact; the bulk operator does this in one task.
    send = VantaxSendMessageOperator.partial(task_id="send", wait_for_delivery=True, poll_interval=0.5)
    send.expand_kwargs(personalise())
