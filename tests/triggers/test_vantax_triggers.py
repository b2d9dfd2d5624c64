from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from vantax_provider.hooks.vantax import VantaxHook
from vantax_provider.triggers.vantax import VantaxMessagesStatusTrigger, VantaxMessageStatusTrigger

FAST = {"poll_interval": 0.05}


def send(conversation_id: str, channel: str = "facebook") -> str:
    hook = VantaxHook()
    try:
        return hook.send_message(conversation_id, channel=channel, content="hello").id
    finally:
        hook.close()


async def _first(trigger: Any) -> dict[str, Any]:
    async for event in trigger.run():
        return event.payload  # type: ignore[no-any-return]
    raise AssertionError("the trigger ended without an event")


def first_event(trigger: Any) -> dict[str, Any]:
    payload = asyncio.run(_first(trigger))
    assert json.loads(json.dumps(payload)) == payload  # JSON-safe, nothing pickled
    return payload


# -- serialisation ------------------------------------------------------------------------------


def test_single_serialize_round_trip_is_exact() -> None:
    kwargs = {
        "conversation_id": "conv_1", "message_id": "msg_1", "vantax_conn_id": "vx",
        "end_time": 1_900_000_000.5, "poll_interval": 2.0, "success_statuses": ["read"],
        "failure_statuses": ["undelivered"],
    }  # fmt: skip
    path, out = VantaxMessageStatusTrigger(**kwargs).serialize()
    assert path == "vantax_provider.triggers.vantax.VantaxMessageStatusTrigger"
    assert out == kwargs
    assert VantaxMessageStatusTrigger(**out).serialize() == (path, kwargs)


def test_many_serialize_round_trip_is_exact() -> None:
    kwargs = {
        "messages": [["conv_1", "msg_1"], ["conv_2", "msg_2"]], "vantax_conn_id": "vx", "end_time": None,
        "poll_interval": 1.5, "success_statuses": None, "failure_statuses": ["bounced"], "max_concurrency": 3,
    }  # fmt: skip
    path, out = VantaxMessagesStatusTrigger(**kwargs).serialize()
    assert path == "vantax_provider.triggers.vantax.VantaxMessagesStatusTrigger"
    assert out == kwargs
    assert VantaxMessagesStatusTrigger(**out).serialize() == (path, kwargs)


XCOM_REF = {
    "dag_id": "d",
    "task_id": "bulk",
    "run_id": "r1",
    "map_index": -1,
    "key": "vantax_bulk_wait_messages",
}


def test_many_with_an_xcom_reference_serializes_only_the_reference() -> None:
    path, out = VantaxMessagesStatusTrigger(messages_xcom=XCOM_REF, poll_interval=1.5).serialize()
    assert out["messages_xcom"] == XCOM_REF and "messages" not in out
    assert VantaxMessagesStatusTrigger(**out).serialize() == (path, out)


def test_serialized_kwargs_are_json_and_carry_no_key(vantax_conn: str, vantax_emulator: Any) -> None:
    trigger = VantaxMessageStatusTrigger("conv_1", "msg_1", end_time=time.time() + 5)
    _, kwargs = trigger.serialize()
    text = json.dumps(kwargs)
    assert vantax_emulator.api_key not in text
    assert kwargs["vantax_conn_id"] == "vantax_default"


def test_end_time_accepts_iso_strings() -> None:
    trigger = VantaxMessageStatusTrigger("c", "m", end_time="2030-01-01T00:00:00+00:00")
    assert trigger.end_time == 1893456000.0


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="poll_interval"):
        VantaxMessageStatusTrigger("c", "m", poll_interval=0)
    with pytest.raises(ValueError, match="pairs"):
        VantaxMessagesStatusTrigger([["only-one"]])
    with pytest.raises(ValueError, match="exactly one"):
        VantaxMessagesStatusTrigger()
    with pytest.raises(ValueError, match="exactly one"):
        VantaxMessagesStatusTrigger([["c", "m"]], messages_xcom=XCOM_REF)
    with pytest.raises(ValueError, match="messages_xcom"):
        VantaxMessagesStatusTrigger(messages_xcom={**XCOM_REF, "map_index": "-1"})
    with pytest.raises(ValueError, match="messages_xcom"):
        VantaxMessagesStatusTrigger(messages_xcom={"key": "k"})


# -- one message ---------------------------------------------------------------------------------


def test_delivered(vantax_conn: str, vantax_emulator: Any) -> None:
    message_id = send("conv_ok")
    event = first_event(VantaxMessageStatusTrigger("conv_ok", message_id, end_time=time.time() + 10, **FAST))
    assert event == {
        "status": "success", "message": f"Vantax message {message_id} is delivered.",
        "message_id": message_id, "conversation_id": "conv_ok", "delivery_status": "delivered",
    }  # fmt: skip
    assert vantax_emulator.stats()["created"] == 1


def test_failed(vantax_conn: str) -> None:
    message_id = send("conv_fail_1")
    event = first_event(
        VantaxMessageStatusTrigger("conv_fail_1", message_id, end_time=time.time() + 10, **FAST)
    )
    assert event["status"] == "failure"
    assert "'failed'" in event["message"] and message_id in event["message"]


def test_timeout_names_the_last_status(vantax_conn: str) -> None:
    message_id = send("conv_stuck_1")
    event = first_event(
        VantaxMessageStatusTrigger("conv_stuck_1", message_id, end_time=time.time() + 0.4, **FAST)
    )
    assert event["status"] == "timeout"
    assert event["delivery_status"] == "sent"
    assert message_id in event["message"] and "'sent'" in event["message"]


def test_unknown_status_fails_closed_unless_listed(vantax_conn: str, vantax_emulator: Any) -> None:
    vantax_emulator.configure(outcomes={"conv_read": "read"})
    message_id = send("conv_read")
    event = first_event(
        VantaxMessageStatusTrigger("conv_read", message_id, end_time=time.time() + 10, **FAST)
    )
    assert event["status"] == "unknown"
    assert "'read'" in event["message"]
    listed = VantaxMessageStatusTrigger(
        "conv_read", message_id, end_time=time.time() + 10, success_statuses=["read"], **FAST
    )
    assert first_event(listed)["status"] == "success"
    as_failure = VantaxMessageStatusTrigger(
        "conv_read", message_id, end_time=time.time() + 10, failure_statuses="READ", **FAST
    )
    assert first_event(as_failure)["status"] == "failure"


def test_transient_errors_are_polled_through(vantax_emulator: Any, conn_extra: Any) -> None:
    conn_extra(max_retries=0)  # so the hook gives up at once and the trigger's own loop is tested
    message_id = send("conv_ok")
    vantax_emulator.inject("status", status=503, method="GET", times=2)
    event = first_event(VantaxMessageStatusTrigger("conv_ok", message_id, end_time=time.time() + 10, **FAST))
    assert event["status"] == "success"
    gets = [r["status"] for r in vantax_emulator.requests() if r["method"] == "GET"]
    assert gets[:2] == [503, 503] and gets[-1] == 200


def test_a_permanent_error_ends_the_wait(vantax_conn: str) -> None:
    event = first_event(
        VantaxMessageStatusTrigger("conv_ok", "msg_missing", end_time=time.time() + 10, **FAST)
    )
    assert event["status"] == "error"
    assert "404" in event["message"]


# -- many messages -------------------------------------------------------------------------------


def test_many_all_delivered(vantax_conn: str) -> None:
    pairs = [(f"conv_{i}", send(f"conv_{i}")) for i in range(5)]
    event = first_event(VantaxMessagesStatusTrigger(pairs, end_time=time.time() + 10, **FAST))
    assert event["status"] == "success"
    assert event["counts"] == {"success": 5, "failure": 0, "unknown": 0, "error": 0, "pending": 0}
    # Every message not listed ended in ``success_status``: here all five.
    assert event["success_status"] == "delivered"
    assert event["statuses"] == {} and event["statuses_omitted"] == 0


def test_many_with_a_failure_and_a_missing_message(vantax_conn: str) -> None:
    ok, bad = send("conv_ok"), send("conv_fail_x")
    pairs = [("conv_ok", ok), ("conv_fail_x", bad), ("conv_ok", "msg_missing")]
    event = first_event(VantaxMessagesStatusTrigger(pairs, end_time=time.time() + 10, **FAST))
    assert event["status"] == "failure"
    assert event["counts"] == {"success": 1, "failure": 1, "unknown": 0, "error": 1, "pending": 0}
    assert event["success_status"] == "delivered"
    assert event["statuses"] == {bad: "failed", "msg_missing": None}  # only the ones not delivered
    assert "404" in event["errors"]["msg_missing"]


def test_many_timeout_counts_pending(vantax_conn: str) -> None:
    pairs = [("conv_ok", send("conv_ok")), ("conv_stuck_2", send("conv_stuck_2"))]
    event = first_event(VantaxMessagesStatusTrigger(pairs, end_time=time.time() + 0.5, **FAST))
    assert event["status"] == "timeout"
    assert event["counts"]["pending"] == 1 and event["counts"]["success"] == 1


def test_many_polls_concurrently_within_the_bound(vantax_conn: str, vantax_emulator: Any) -> None:
    pairs = [(f"conv_{i}", send(f"conv_{i}")) for i in range(8)]
    vantax_emulator.configure(latency_ms=150, queued_seconds=0, sent_seconds=0)
    first_event(VantaxMessagesStatusTrigger(pairs, end_time=time.time() + 20, max_concurrency=3, **FAST))
    gets = [r for r in vantax_emulator.requests() if r["method"] == "GET"]
    assert len(gets) >= 8
    # The most requests the server held at one moment: arrivals counted against completions.
    edges = sorted([(r["t"], 1) for r in gets] + [(r["t"] + r["duration"], -1) for r in gets])
    in_flight = peak = 0
    for _, step in edges:
        in_flight += step
        peak = max(peak, in_flight)
    assert peak == 3  # the cap is used in full and never exceeded


# -- the settle time after a deferral (apache/airflow#71580, #72716) ----------------------------


@pytest.mark.parametrize("many", [False, True], ids=["single", "many"])
def test_an_event_is_held_until_not_before(vantax_conn: str, many: bool) -> None:
    message_id = send("conv_settle")
    time.sleep(0.3)  # delivered before the trigger's first read: it could fire at once
    not_before = time.time() + 1.0
    trigger: Any = (
        VantaxMessagesStatusTrigger([["conv_settle", message_id]], not_before=not_before, **FAST)
        if many
        else VantaxMessageStatusTrigger("conv_settle", message_id, not_before=not_before, **FAST)
    )
    assert trigger.serialize()[1]["not_before"] == not_before
    event = first_event(trigger)
    assert time.time() >= not_before
    assert event["status"] == "success"


def test_settle_time_is_read_from_airflow_config(monkeypatch: pytest.MonkeyPatch) -> None:
    from vantax_provider._compat import AirflowException
    from vantax_provider.status import DEFERRAL_SETTLE_SECONDS, settle_until

    monkeypatch.delenv("AIRFLOW__VANTAX__DEFERRAL_SETTLE_SECONDS")
    now = time.time()
    assert now + DEFERRAL_SETTLE_SECONDS <= settle_until() <= time.time() + DEFERRAL_SETTLE_SECONDS
    monkeypatch.setenv("AIRFLOW__VANTAX__DEFERRAL_SETTLE_SECONDS", "2.5")
    now = time.time()
    assert now + 2.5 <= settle_until() <= time.time() + 2.5
    for bad in ("-1", "nan", "inf", "soon"):
        monkeypatch.setenv("AIRFLOW__VANTAX__DEFERRAL_SETTLE_SECONDS", bad)
        with pytest.raises(AirflowException, match="deferral_settle_seconds"):
            settle_until()
