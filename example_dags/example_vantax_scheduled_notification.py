"""
A scheduled notification: every weekday morning, post a status message and wait until it is delivered.

The conversation, channel and sender come from params, so a manual run can point them elsewhere.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Param

from vantax_provider.operators.vantax import VantaxSendMessageOperator

with DAG(
    dag_id="example_vantax_scheduled_notification",
    schedule="0 8 * * 1-5",
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["example", "vantax"],
    params={
        "conversation_id": Param("conv_ops_team", type="string"),
        "channel": Param("sms", enum=["sms", "whatsapp", "facebook", "instagram", "email"]),
        "from_phone_number_id": Param("pn_demo_sender", type=["null", "string"]),
    },
    doc_md=__doc__,
) as dag:
    VantaxSendMessageOperator(
        task_id="morning_briefing",
        conversation_id="{{ params.conversation_id }}",
        channel="{{ params.channel }}",
        from_phone_number_id="{{ params.from_phone_number_id or '' }}",
        # run_after, not ds: a manual run may have no logical date (ds undefined), every run has run_after.
        content="Good morning! The data for {{ dag_run.run_after | ds }} is ready. Run: {{ run_id }}",
        wait_for_delivery=True,
        deferrable=True,  # waiting for the delivery receipt holds no worker slot
        poll_interval=1,
        delivery_timeout=600,
    )
