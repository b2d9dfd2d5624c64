"""
A retry of a bulk send with ``wait_for_delivery``, run by Airflow itself (``dag.test()``): the
retry sends nothing again, yet waits for every message the earlier try created, and lists each
recipient with its message id and last delivery status.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any

import pytest
from airflow.sdk.execution_time import task_runner
from vantax_dagtest import load_dag, task_states, xcom

from tests.doubles import FakeTI, XComSupervisor
from vantax_provider._compat import AirflowException
from vantax_provider.operators.vantax_bulk import (
    FAILED_RESULT_XCOM_KEY,
    WAIT_MESSAGES_XCOM_KEY,
    VantaxBulkSendMessageOperator,
    read_report,
)

try:
    from airflow.sdk.exceptions import TaskDeferred
except ImportError:  # Airflow < 3.3
    from airflow.exceptions import TaskDeferred  # type: ignore[no-redef,attr-defined]

LOGICAL_DATE = datetime(2025, 5, 1, tzinfo=timezone.utc)
N = 20
FAILING = {5, 13}  # these conversations end ``failed`` in the emulator (the conv_fail prefix)

_DAG = """
from datetime import datetime, timedelta
from airflow.sdk import DAG
from vantax_provider.operators.vantax_bulk import VantaxBulkSendMessageOperator

FAILING = {failing!r}
RECIPIENTS = [
    {{"cid": (f"conv_fail_{prefix}{{i:02d}}" if i in FAILING else f"conv_{prefix}{{i:02d}}"), "n": i}}
    for i in range({n})
]

with DAG("{dag_id}", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
    VantaxBulkSendMessageOperator(
        task_id="bulk",
        recipients=RECIPIENTS,
        conversation_id="{{{{ recipient.cid }}}}",
        channel="email",
        subject="s",
        content="Hi {{{{ recipient.n }}}}",
        wait_for_delivery=True,
        deferrable={deferrable},
        poll_interval=0.1,
        delivery_timeout=60,
        retries=1,
        retry_delay=timedelta(seconds=0),
        checkpoint_interval=0.2,
    )
"""


def _conversation(i: int, prefix: str) -> str:
    return f"conv_fail_{prefix}{i:02d}" if i in FAILING else f"conv_{prefix}{i:02d}"


@pytest.mark.airflow_3_3  # task_state_store
def test_a_retry_waits_for_every_earlier_message_and_fails_again(dag_env) -> None:  # type: ignore[no-untyped-def]
    """In the worker (``deferrable=False``); the deferred wait is below (see its docstring)."""
    emu = dag_env
    deferrable, prefix = False, "rww"
    dag_id = f"vx_bulk_wait_retry_{prefix}"
    dag = load_dag(
        dag_id, _DAG.format(dag_id=dag_id, n=N, prefix=prefix, failing=FAILING, deferrable=deferrable)
    )
    run = dag.test(logical_date=LOGICAL_DATE, run_after=LOGICAL_DATE)

    # Try 1 sent 20 and saw 2 fail; try 2 sends nothing, waits again, sees the same 2 and fails too.
    assert task_states(run) == {"bulk": ("failed", 2)}
    posts = [r for r in emu.requests() if r["method"] == "POST"]
    assert len(posts) == N and emu.stats()["created"] == N
    ids = {m["conversation_id"]: m["id"] for m in emu.messages()}
    read_after_retry = {r["conversation_id"] for r in emu.requests()[len(posts) :] if r["method"] == "GET"}
    result: dict[str, Any] = xcom(run, "bulk", key=FAILED_RESULT_XCOM_KEY)  # try 2's (XCom is per try)
    assert result["report"].endswith("/bulk.try-2.jsonl"), result["report"]
    assert (result["sent"], result["skipped_already_sent"]) == (0, N)
    delivery = result["delivery"]
    assert delivery["counts"]["success"] == N - len(FAILING) and delivery["counts"]["failure"] == len(FAILING)
    assert sorted(u["conversation_id"] for u in delivery["undelivered"]) == sorted(
        _conversation(i, prefix) for i in FAILING
    )
    # Every recipient is in the report with the id of the message the earlier try created ...
    rows = list(read_report(result["report"]))
    assert [r["outcome"] for r in rows] == ["skipped_already_sent"] * N
    assert [r.get("message_id") for r in rows] == [ids[_conversation(i, prefix)] for i in range(N)]
    # ... and in the delivery report with its last status, read again by this try.
    statuses = {r["message_id"]: r["delivery_status"] for r in read_report(delivery["report"])}
    expected = {ids[_conversation(i, prefix)]: "failed" if i in FAILING else "delivered" for i in range(N)}
    assert statuses == expected
    assert read_after_retry >= {_conversation(i, prefix) for i in range(N)}  # try 2 read every one


def _deferred_try(store: Any, try_number: int, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """One try with a deferred wait: execute, the trigger's run (ids read from XCom), execute_complete."""
    recipients = [{"cid": _conversation(i, "rwx"), "n": i} for i in range(N)]
    operator = VantaxBulkSendMessageOperator(
        task_id="bulk", recipients=recipients, conversation_id="{{ recipient.cid }}", channel="email",
        subject="s", content="Hi {{ recipient.n }}", wait_for_delivery=True, deferrable=True,
        poll_interval=0.1, delivery_timeout=60,
    )  # fmt: skip
    ti = FakeTI(dag_id="bulk_dag", task_id="bulk", run_id="run1", try_number=try_number)
    context = {"ti": ti, "task_state_store": store}
    try:
        operator.execute(context)  # type: ignore[arg-type]
    except TaskDeferred as deferred:
        trigger, kwargs = deferred.trigger, deferred.kwargs or {}
    else:
        raise AssertionError(f"try {try_number} did not defer: it waited for nothing")
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", XComSupervisor(ti), raising=False)

    async def first_event() -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("no event")

    event = asyncio.run(first_event())
    try:
        return operator.execute_complete(context, event=event, **kwargs)  # type: ignore[arg-type]
    except AirflowException:
        assert len(ti.xcoms[WAIT_MESSAGES_XCOM_KEY]) == N  # every message, this try's or earlier
        return {"failed_with": ti.xcoms[FAILED_RESULT_XCOM_KEY]}


def test_a_deferred_retry_waits_for_every_earlier_message_and_fails_again(emu, store, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """
    ``deferrable=True``, by the operator's own entry points: ``dag.test()`` runs a trigger in-process
    where it cannot read XCom, so the deferral is driven here as in test_bulk_wait.py.
    """
    first = _deferred_try(store, 1, monkeypatch)["failed_with"]
    assert first["sent"] == N and first["delivery"]["counts"]["failure"] == len(FAILING)
    retry = _deferred_try(store, 2, monkeypatch)["failed_with"]  # fails again: it waited for all 20
    assert emu.stats()["created"] == N and sum(r["method"] == "POST" for r in emu.requests()) == N
    assert (retry["sent"], retry["skipped_already_sent"]) == (0, N)
    assert retry["delivery"]["counts"] == {
        "success": N - len(FAILING), "failure": len(FAILING), "unknown": 0, "error": 0, "pending": 0,
    }  # fmt: skip
    ids = {m["conversation_id"]: m["id"] for m in emu.messages()}
    rows = list(read_report(retry["report"]))
    assert [r.get("message_id") for r in rows] == [ids[_conversation(i, "rwx")] for i in range(N)]
    statuses = {r["message_id"]: r["delivery_status"] for r in read_report(retry["delivery"]["report"])}
    expected = {ids[_conversation(i, "rwx")]: "failed" if i in FAILING else "delivered" for i in range(N)}
    assert statuses == expected


def test_a_retry_with_a_shorter_list_still_waits_for_every_earlier_message(emu, context, store) -> None:  # type: ignore[no-untyped-def]
    """Two recipients left the list between tries: their messages exist, so the retry waits for them too."""

    def operator(rows: list[dict[str, Any]]) -> VantaxBulkSendMessageOperator:
        return VantaxBulkSendMessageOperator(
            task_id="bulk", recipients=rows, conversation_id="{{ recipient.cid }}", channel="instagram",
            content="hello", wait_for_delivery=True, deferrable=False, poll_interval=0.1, delivery_timeout=30,
        )  # fmt: skip

    rows = [{"cid": f"conv_sl{i}"} for i in range(5)]
    assert operator(rows).execute(context(store))["delivery"]["counts"]["success"] == 5
    gets_before = len(emu.requests())
    retry = operator(rows[2:]).execute(context(store))
    assert (retry["total"], retry["sent"], retry["skipped_already_sent"]) == (3, 0, 3)
    assert retry["delivery"]["counts"]["success"] == 5
    read = {r["conversation_id"] for r in emu.requests()[gets_before:] if r["method"] == "GET"}
    assert read == {f"conv_sl{i}" for i in range(5)}
    assert len(list(read_report(retry["delivery"]["report"]))) == 5
