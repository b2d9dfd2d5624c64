"""``wait_for_delivery`` of the bulk operator: in the worker, and deferred to the many-message trigger."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from airflow.sdk.execution_time import task_runner

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

RECIPIENTS = [{"cid": "conv_w1"}, {"cid": "conv_fail_w2"}, {"cid": "conv_w3"}]


def _op(**kwargs: Any) -> VantaxBulkSendMessageOperator:
    return VantaxBulkSendMessageOperator(
        task_id="bulk", recipients=RECIPIENTS, conversation_id="{{ recipient.cid }}",
        channel="instagram", content="hello", wait_for_delivery=True, poll_interval=0.1,
        delivery_timeout=10, **kwargs,
    )  # fmt: skip


def _delivery_by_conversation(result: dict[str, Any]) -> dict[str, str]:
    """Each message's last status, from the delivery report next to the send report."""
    assert result["delivery"]["report"] == result["report"].removesuffix(".jsonl") + ".delivery.jsonl"
    rows = read_report(result["delivery"]["report"])
    by_report = {r["conversation_id"]: r["delivery_status"] for r in rows}
    # The result lists the undelivered one itself (bounded: at most max_listed_outcomes).
    [undelivered] = result["delivery"]["undelivered"]
    assert by_report[undelivered["conversation_id"]] == undelivered["delivery_status"] != "delivered"
    assert result["delivery"]["truncated"] is False
    return by_report


def test_in_worker_wait_counts_undelivered_messages_as_failures(emu, context) -> None:  # type: ignore[no-untyped-def]
    ctx = context()
    with pytest.raises(AirflowException, match="1 of 3"):
        _op(deferrable=False).execute(ctx)
    result = ctx["ti"].xcoms[FAILED_RESULT_XCOM_KEY]
    assert result["sent"] == 3
    assert _delivery_by_conversation(result) == {
        "conv_w1": "delivered", "conv_fail_w2": "failed", "conv_w3": "delivered",
    }  # fmt: skip
    assert result["delivery"]["counts"]["failure"] == 1
    assert emu.stats()["created"] == 3


def test_in_worker_wait_within_the_failure_ratio_succeeds(emu, context) -> None:  # type: ignore[no-untyped-def]
    result = _op(deferrable=False, max_failure_ratio=0.5).execute(context())
    assert result["delivery"]["counts"]["success"] == 2
    assert _delivery_by_conversation(result)["conv_fail_w2"] == "failed"


def test_deferred_wait_resumes_with_the_triggers_statuses(emu, context, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    operator = _op(deferrable=True, max_failure_ratio=0.5)
    ctx = context()
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(ctx)
    trigger, kwargs = deferred.value.trigger, deferred.value.kwargs or {}
    assert "vx_test" not in str(trigger.serialize())  # only ids and the conn id travel
    assert kwargs == {}  # the result waits in XCom, not in the next kwargs
    supervisor = XComSupervisor(ctx["ti"])
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", supervisor, raising=False)

    async def first_event() -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("no event")

    event = asyncio.run(first_event())
    result = operator.execute_complete(ctx, event=event, **kwargs)
    assert _delivery_by_conversation(result) == {
        "conv_w1": "delivered", "conv_fail_w2": "failed", "conv_w3": "delivered",
    }  # fmt: skip
    assert emu.stats()["created"] == 3
    assert [m.key for m in supervisor.requests] == [WAIT_MESSAGES_XCOM_KEY]  # the ids came from XCom


def _deferred_size(pending: int) -> tuple[dict[str, Any], int, int]:
    """The trigger's kwargs (times aside), their bytes and the next kwargs' bytes, for ``pending``."""
    ti = FakeTI(dag_id="bulk_dag", task_id="bulk", run_id="scheduled__2025-01-01T00:00:00+00:00")
    pairs = [[f"conv_{i:06d}", f"msg_{i:024d}"] for i in range(pending)]
    result = {"total": pending, "sent": pending, "failed": 0, "invalid": 0, "outcomes": [], "report": None}
    with pytest.raises(TaskDeferred) as deferred:
        _op(deferrable=True)._wait({"ti": ti}, result, pairs)  # type: ignore[arg-type]
    assert len(ti.xcoms[WAIT_MESSAGES_XCOM_KEY]) == pending  # the ids are all there, in XCom
    _, trigger_kwargs = deferred.value.trigger.serialize()
    trigger_bytes = len(json.dumps(trigger_kwargs))
    next_bytes = len(json.dumps(deferred.value.kwargs or {}))
    untimed = {k: v for k, v in trigger_kwargs.items() if k not in ("end_time", "not_before")}
    return untimed, trigger_bytes, next_bytes


def test_deferred_kwargs_do_not_grow_with_the_batch() -> None:
    small, large = _deferred_size(10), _deferred_size(10_000)
    print(f"\nbulk deferred wait: trigger kwargs {small[1]} B for 10 messages, {large[1]} B for 10,000; "
          f"next kwargs {small[2]} B and {large[2]} B")  # fmt: skip
    assert small[0] == large[0]  # the same arguments: a reference to the XCom, not the ids
    assert "messages" not in large[0] and large[0]["messages_xcom"]["key"] == WAIT_MESSAGES_XCOM_KEY
    assert abs(small[1] - large[1]) <= 4 and large[1] < 1024  # floats' repr may differ by a byte
    assert small[2] == large[2] == 2  # ``{}``: the result waits in XCom
