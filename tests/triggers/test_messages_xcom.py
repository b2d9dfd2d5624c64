"""The many-message trigger reading its ids from an XCom (what a deferred bulk wait stores)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from airflow.sdk.bases.xcom import BaseXCom
from airflow.sdk.execution_time import task_runner
from airflow.sdk.execution_time.xcom import XCom

from tests.doubles import FakeTI, XComSupervisor
from tests.triggers.test_vantax_triggers import FAST, first_event, send
from vantax_provider._compat import aget_xcom
from vantax_provider.triggers.vantax import MAX_LISTED_STATUSES, VantaxMessagesStatusTrigger

KEY = "vantax_bulk_wait_messages"


@pytest.fixture
def ti(monkeypatch: pytest.MonkeyPatch) -> FakeTI:
    """A task instance whose pushes the (fake) triggerer supervisor serves."""
    ti = FakeTI(dag_id="bulk_dag", task_id="bulk", run_id="run1", map_index=3)
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", XComSupervisor(ti), raising=False)
    return ti


def _ref(ti: FakeTI, key: str = KEY) -> dict[str, Any]:
    return {
        "dag_id": ti.dag_id,
        "task_id": ti.task_id,
        "run_id": ti.run_id,
        "map_index": ti.map_index,
        "key": key,
    }


@pytest.mark.parametrize("api", ["aget_one", "get_one"])
def test_aget_xcom_reads_the_pushed_value(ti: FakeTI, monkeypatch: pytest.MonkeyPatch, api: str) -> None:
    if api == "get_one":  # Airflow 3.1/3.2: no aget_one, the blocking read runs in a thread
        for cls in {XCom, BaseXCom}:
            if "aget_one" in vars(cls):
                monkeypatch.delattr(cls, "aget_one")
    elif not hasattr(XCom, "aget_one"):
        pytest.skip("this Airflow has no XCom.aget_one")
    ti.xcom_push(KEY, [["conv_1", "msg_1"], ["conv_2", "msg_2"]])
    value = asyncio.run(aget_xcom(**_ref(ti)))
    assert value == [["conv_1", "msg_1"], ["conv_2", "msg_2"]]
    assert asyncio.run(aget_xcom(**{**_ref(ti), "map_index": 4})) is None  # another map index: nothing
    supervisor = task_runner.SUPERVISOR_COMMS
    assert [(m.key, m.map_index) for m in supervisor.requests] == [(KEY, 3), (KEY, 4)]


def test_trigger_resolves_the_messages_of_the_referenced_xcom(ti: FakeTI, vantax_conn: str) -> None:
    ok, bad = send("conv_ok"), send("conv_fail_x")
    ti.xcom_push(KEY, [["conv_ok", ok], ["conv_fail_x", bad]])
    trigger = VantaxMessagesStatusTrigger(messages_xcom=_ref(ti), end_time=time.time() + 10, **FAST)
    event = first_event(trigger)
    assert event["counts"] == {"success": 1, "failure": 1, "unknown": 0, "error": 0, "pending": 0}
    assert event["statuses"] == {bad: "failed"} and event["success_status"] == "delivered"


def test_a_missing_xcom_ends_the_wait_with_an_error(ti: FakeTI, vantax_conn: str) -> None:
    event = first_event(VantaxMessagesStatusTrigger(messages_xcom=_ref(ti), **FAST))
    assert event["status"] == "error"
    assert KEY in event["message"] and len(event["message"]) < 500


def test_the_operator_fails_with_the_triggers_reason_when_the_ids_cannot_be_read(ti: FakeTI) -> None:
    from vantax_provider._compat import AirflowException
    from vantax_provider.operators.vantax_bulk import WAIT_RESULT_XCOM_KEY, VantaxBulkSendMessageOperator

    ti.xcom_push(WAIT_RESULT_XCOM_KEY, {"total": 1, "sent": 1, "failed": 0, "invalid": 0, "outcomes": []})
    event = {
        "status": "error",
        "message": f"Cannot read the Vantax messages to wait for: XCom {KEY!r} is missing.",
    }
    operator = VantaxBulkSendMessageOperator(
        task_id="bulk", recipients=[], conversation_id="c", channel="facebook", content="x"
    )
    with pytest.raises(AirflowException, match="Cannot read the Vantax messages"):
        operator.execute_complete({"ti": ti}, event=event)  # type: ignore[arg-type]


def test_the_event_lists_at_most_the_cap() -> None:
    trigger = VantaxMessagesStatusTrigger([["c", "m"]])
    total = MAX_LISTED_STATUSES + 500
    statuses: dict[str, str | None] = {f"ok_{i}": "delivered" for i in range(total)}
    statuses |= {f"bad_{i}": "failed" for i in range(total)}
    event = trigger._summary(statuses, {}, timed_out=False)
    assert event["counts"]["success"] == total and event["counts"]["failure"] == total
    assert event["success_status"] == "delivered"
    assert len(event["statuses"]) == MAX_LISTED_STATUSES and event["statuses_omitted"] == 500
    assert set(event["statuses"].values()) == {"failed"}
    assert len(json.dumps(event)) < 64 * 1024


def test_the_supervisor_channel_is_told_apart(ti: FakeTI, monkeypatch: pytest.MonkeyPatch) -> None:
    """The task SDK's channel: a triggerer's (asend), none, or one this provider does not know."""
    from vantax_provider._compat import AirflowException, in_process_supervisor

    assert in_process_supervisor() is False  # the fake triggerer channel has asend
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", None)
    assert in_process_supervisor() is False  # outside a task or trigger

    class BlockingOnly:  # neither asend nor dag.test()'s InProcessSupervisorComms
        def send(self, msg: Any) -> Any: ...

    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", BlockingOnly())
    with pytest.raises(AirflowException, match=r"through BlockingOnly, which has no asend\(\)"):
        in_process_supervisor()
    trigger = VantaxMessagesStatusTrigger(messages_xcom=_ref(ti), **FAST)
    if hasattr(XCom, "aget_one"):  # where the read would ask the channel which way to go
        event = first_event(trigger)
        assert event["status"] == "error" and "BlockingOnly, which has no asend()" in event["message"]
        assert len(event["message"]) < 500
