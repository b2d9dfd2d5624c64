"""
Text that came from an XCom reaches a notifier's message as data, never as a template: given to
the notifier as an XComArg, pulled in its template, or read from a mapped task whose fields came
from an XCom.
"""

from __future__ import annotations

import json
from typing import Any

from vantax_dagtest import load_dag, rendered_fields, task_states

EVIL = "Key {{ conn.vantax_default.password }} is {{ 7 * 6 }}"

DAG_SOURCE = """
from datetime import datetime
from airflow.sdk import DAG, task
from vantax_provider.notifications.vantax import VantaxNotifier
from vantax_provider.operators.vantax import VantaxSendMessageOperator as Send

EVIL = "Key {{ conn.vantax_default.password }} is {{ 7 * 6 }}"

with DAG("nt_xcom", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
    @task
    def evil():
        return EVIL

    @task
    def rows():
        # A closed messaging window (422): the mapped send fails and its callback alerts.
        return [{"conversation_id": "conv_closed_nt", "channel": "whatsapp", "from_phone_number_id": "pn_1",
                 "content": EVIL}]

    text = evil()

    @task(on_failure_callback=VantaxNotifier(conversation_id="nt_plain", channel="facebook", content=text))
    def boom():
        raise RuntimeError("no")

    @task(on_failure_callback=VantaxNotifier(conversation_id="nt_pull", channel="facebook",
                                             content="Pulled: {{ ti.xcom_pull('evil') }}"))
    def boom_pull():
        raise RuntimeError("no")

    text >> [boom(), boom_pull()]
    Send.partial(
        task_id="mapped",
        on_failure_callback=VantaxNotifier(conversation_id="nt_mapped", channel="facebook",
                                           content="Failed: {{ task.content }}"),
    ).expand_kwargs(rows())
"""


def test_notifier_sends_xcom_text_verbatim(dag_env: Any) -> None:
    dag = load_dag("nt_xcom", DAG_SOURCE)
    dr = dag.test()
    sent = {m["conversation_id"]: m["body"]["content"] for m in dag_env.messages()}
    assert sent == {"nt_plain": EVIL, "nt_pull": f"Pulled: {EVIL}", "nt_mapped": f"Failed: {EVIL}"}
    states = task_states(dr)
    assert {k: s for k, (s, _) in states.items()} == {
        "evil": "success", "rows": "success", "boom": "failed", "boom_pull": "failed", "mapped[0]": "failed",
    }  # fmt: skip
    assert dag_env.api_key not in json.dumps(dag_env.messages())
    assert dag_env.api_key not in json.dumps(rendered_fields("nt_xcom"), default=str)
