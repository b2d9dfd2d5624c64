"""
Data-triggered outreach: when the contacts asset is updated, send each contact a personalised message.

The contacts live in ``data/contacts.csv`` beside this file.  One bulk task sends them all
concurrently; the message fields are templates rendered per contact with ``recipient``, in a
sandbox.  A value from the data, such as a first name written ``{{ x }}``, is inserted as text
and never rendered itself.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG, Asset, task

from vantax_provider.operators.vantax import VantaxBulkSendMessageOperator

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
    def load_contacts() -> list[dict[str, str]]:
        import csv

        with CONTACTS.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))

    VantaxBulkSendMessageOperator(
        task_id="send",
        recipients=load_contacts(),
        conversation_id="{{ recipient.conversation_id }}",
        channel="{{ recipient.channel }}",
        content="Hi {{ recipient.first_name }}, your {{ recipient.plan }} plan renews next week.",
        # Fields that render empty are left out, so each channel gets only what it takes.
        subject="{% if recipient.channel == 'email' %}Your {{ recipient.plan }} plan{% endif %}",
        from_phone_number_id="{{ recipient.from_phone_number_id }}",
        max_concurrency=8,
        wait_for_delivery=True,
        poll_interval=0.5,
    )
