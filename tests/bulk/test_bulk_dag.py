"""The bulk operator run by Airflow itself (``dag.test()``): rendering, real retries with the real
``task_state_store``, and dynamic task mapping over chunks."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
from vantax_dagtest import copy_examples, load_dag, load_module, task_states, xcom

from vantax_provider.operators.vantax_bulk import read_report

LOGICAL_DATE = datetime(2025, 3, 1, tzinfo=timezone.utc)

_DAG = """
from datetime import datetime, timedelta
from airflow.sdk import DAG
from vantax_provider.operators.vantax_bulk import VantaxBulkSendMessageOperator

RECIPIENTS = [{{"cid": f"conv_{prefix}{{i:03d}}", "name": f"Name{{i}}"}} for i in range({n})]

with DAG("{dag_id}", schedule=None, start_date=datetime(2025, 1, 1), params={{"brand": "Acme"}}) as dag:
    VantaxBulkSendMessageOperator(
        task_id="bulk",
        recipients=RECIPIENTS,
        conversation_id="{{{{ recipient.cid }}}}",
        channel="email",
        subject="{{{{ params.brand }}}} news",
        content="Hi {{{{ recipient.name }}}}, run {{{{ run_id }}}}",
        retries={retries},
        retry_delay=timedelta(seconds=0),
        checkpoint_interval=0.2,
    )
"""


def _dag(dag_id: str, *, n: int, prefix: str, retries: int = 0) -> Any:
    return load_dag(dag_id, _DAG.format(dag_id=dag_id, n=n, prefix=prefix, retries=retries))


def _checkpoint_rows(dag_id: str) -> list[tuple[str, str]]:
    from airflow.models.task_state_store import TaskStateStoreModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(TaskStateStoreModel.key, TaskStateStoreModel.value).where(
                TaskStateStoreModel.dag_id == dag_id
            )
        ).all()
        return [(r[0], r[1]) for r in rows]


@pytest.mark.airflow_3_3  # task_state_store
def test_airflow_leaves_per_recipient_templates_to_the_operator(dag_env) -> None:  # type: ignore[no-untyped-def]
    emu = dag_env
    dag = _dag("vx_bulk_render", n=15, prefix="r")
    run = dag.test(logical_date=LOGICAL_DATE, run_after=LOGICAL_DATE)

    assert task_states(run) == {"bulk": ("success", 1)}
    bodies = {m["conversation_id"]: m["body"] for m in emu.messages()}
    assert len(bodies) == 15
    assert bodies["conv_r007"] == {
        "channel": "email", "subject": "Acme news", "content": f"Hi Name7, run {run.run_id}",
    }  # fmt: skip
    result = xcom(run, "bulk")
    assert (result["total"], result["sent"]) == (15, 15)
    # Progress was journalled in the real task_state_store (Airflow 3.3), compactly: an 8-byte
    # identity and the [conversation, message] ids of each message (for a later try's wait).
    rows = _checkpoint_rows("vx_bulk_render")
    assert [key for key, _ in rows] == ["vantax_bulk_journal"] and len(rows[0][1]) < 15 * 60


@pytest.mark.airflow_3_3  # task_state_store
def test_airflow_retry_skips_recipients_sent_by_the_failed_try(dag_env) -> None:  # type: ignore[no-untyped-def]
    emu = dag_env
    # The API refuses one message once: try 1 sends 19 and fails by the default policy.
    emu.inject("status", status=400, method="POST", conversation_id="conv_t013", times=1)
    dag = _dag("vx_bulk_retry", n=20, prefix="t", retries=1)
    run = dag.test(logical_date=LOGICAL_DATE, run_after=LOGICAL_DATE)

    assert task_states(run) == {"bulk": ("success", 2)}
    posts = [r for r in emu.requests() if r["method"] == "POST"]
    assert len(posts) == 21  # 20 in try 1, then only the refused one in try 2
    assert emu.stats()["created"] == 20
    assert sorted(m["conversation_id"] for m in emu.messages()) == [f"conv_t{i:03d}" for i in range(20)]
    result = xcom(run, "bulk")
    assert (result["sent"], result["skipped_already_sent"], result["failed"]) == (1, 19, 0)
    rows = list(read_report(result["report"]))
    assert rows[13]["outcome"] == "sent" and result["report"].endswith("/bulk.try-2.jsonl")
    # The first try's report is kept beside it (one file per try): 19 sent, #13 refused.
    first = list(read_report(result["report"].replace(".try-2.", ".try-1.")))
    assert [r["outcome"] for r in first] == ["sent"] * 13 + ["failed"] + ["sent"] * 6


def test_mapped_chunks_example_sends_every_recipient_once(dag_env) -> None:  # type: ignore[no-untyped-def]
    emu = dag_env
    folder = copy_examples()
    dag = load_module(folder / "example_vantax_bulk_mapped_chunks.py").dag
    run = dag.test(logical_date=LOGICAL_DATE, run_after=LOGICAL_DATE)

    states = task_states(run)
    chunks = sorted(k for k in states if k.startswith("send_chunk["))
    assert chunks == ["send_chunk[0]", "send_chunk[1]", "send_chunk[2]"]
    assert all(state == "success" for state, _ in states.values()), states
    messages = emu.messages()
    assert len(messages) == 30 and emu.stats()["created"] == 30
    assert len({m["conversation_id"] for m in messages}) == 30
    assert len({m["idempotency_key"] for m in messages}) == 30
    ada = next(m for m in messages if m["conversation_id"] == "conv_cust_0001")["body"]
    assert ada == {
        "channel": "sms", "from_phone_number_id": "pn_outreach",
        "content": "Hi Ada, your basic plan renews next month.",
    }  # fmt: skip
    assert xcom(run, "report") == {
        "total": 30,
        "sent": 30,
        "failed": 0,
        "invalid": 0,
        "skipped_already_sent": 0,
    }
    assert xcom(run, "send_chunk", map_index=2)["total"] == 10
