"""The operator's pieces that need no DAG run: argument checks, validation, waits and events."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

from tests.doubles import FakeTI
from vantax_provider._compat import AirflowException, AirflowFailException
from vantax_provider.hooks.vantax import VantaxHook
from vantax_provider.operators.vantax import VantaxSendMessageOperator
from vantax_provider.status import DEFERRAL_SETTLE_SECONDS


def operator(**kwargs: Any) -> VantaxSendMessageOperator:
    fields = {"task_id": "send", "conversation_id": "conv_1", "channel": "facebook", "content": "hello"}
    return VantaxSendMessageOperator(**{**fields, **kwargs})


def test_declares_the_templating_the_issue_lists() -> None:
    op = operator()
    for name in (
        "conversation_id",
        "channel",
        "content",
        "subject",
        "html",
        "from_phone_number_id",
        "media_url",
    ):
        assert name in op.template_fields
    assert tuple(op.template_ext) == (".txt", ".html", ".j2")
    assert op.template_fields_renderers == {"html": "html", "media_url": "json"}


def test_bad_arguments_fail_at_parse_time() -> None:
    with pytest.raises(ValueError, match="poll_interval"):
        operator(poll_interval=0)
    with pytest.raises(ValueError, match="delivery_timeout"):
        operator(delivery_timeout=-1)
    with pytest.raises(ValueError, match="overlap"):
        operator(success_statuses=["read"], failure_statuses=["READ"])


def test_deferrable_follows_airflow_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "True")
    assert operator().deferrable is True
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "False")
    assert operator().deferrable is False
    assert operator(deferrable=True).deferrable is True


def test_validation_failure_names_fields_and_sends_nothing(vantax_conn: str, vantax_emulator: Any) -> None:
    op = operator(channel="sms", content="")
    with pytest.raises(AirflowFailException) as info:
        op.execute({"ti": FakeTI()})  # type: ignore[arg-type]
    assert "content" in str(info.value) and "from_phone_number_id" in str(info.value)
    assert vantax_emulator.stats()["requests"] == 0


def test_messaging_window_fails_without_retry_and_advises_a_template(
    vantax_conn: str, vantax_emulator: Any
) -> None:
    op = operator(conversation_id="conv_closed_1", channel="whatsapp", from_phone_number_id="pn_1")
    with pytest.raises(AirflowFailException, match="approved template"):
        op.execute({"ti": FakeTI()})  # type: ignore[arg-type]
    assert vantax_emulator.stats()["created"] == 0


def test_without_a_state_store_a_retry_relies_on_the_derived_key(
    vantax_conn: str, vantax_emulator: Any
) -> None:
    """Airflow 3.1/3.2: no task_state_store, so the second try posts again under the same key."""
    first, second = FakeTI(try_number=1), FakeTI(try_number=2)
    out1 = operator().execute({"ti": first})  # type: ignore[arg-type]
    out2 = operator().execute({"ti": second})  # type: ignore[arg-type]
    assert out1["id"] == out2["id"] == first.xcoms["message_id"] == second.xcoms["message_id"]
    stats = vantax_emulator.stats()
    assert stats["created"] == 1 and stats["replayed"] == 1
    # Fixed values, not the production function: a change of the key derivation would make a
    # retry across an upgrade present a new key, so it must show up here. The try number is left
    # out (both tries sent the same key), and so is the body (a re-rendered body keeps the key);
    # a message of the same task to another conversation gets another key.
    posted = [r["idempotency_key"] for r in vantax_emulator.requests() if r["method"] == "POST"]
    assert posted == ["airflow-c504f1f7b43dbe34411a98e9ad0dae139f22382866f25ac6"] * 2
    operator(conversation_id="conv_2").execute({"ti": FakeTI()})  # type: ignore[arg-type]
    assert vantax_emulator.messages()[-1]["idempotency_key"] == (
        "airflow-16bd24f340f1aaa0d953d9192f532d77e1611e70d6232dfb"
    )


def test_idempotency_key_opt_out_and_custom(vantax_conn: str, vantax_emulator: Any) -> None:
    operator(idempotency_key="").execute({"ti": FakeTI()})  # type: ignore[arg-type]
    operator(idempotency_key="my-key-1", content="other").execute({"ti": FakeTI()})  # type: ignore[arg-type]
    assert [m["idempotency_key"] for m in vantax_emulator.messages()] == [None, "my-key-1"]


def _sent(conversation_id: str) -> str:
    hook = VantaxHook()
    try:
        return hook.send_message(conversation_id, channel="facebook", content="x").id
    finally:
        hook.close()


def _send_and_wait(conversation_id: str, **kwargs: Any) -> tuple[dict[str, Any], FakeTI]:
    """The operator's public path: send, then wait in the worker (``wait_for_delivery``)."""
    ti = FakeTI()
    op = operator(conversation_id=conversation_id, wait_for_delivery=True, deferrable=False, **kwargs)
    return op.execute({"ti": ti}), ti  # type: ignore[arg-type]


def _posted(emulator: Any) -> list[str]:
    return [m["id"] for m in emulator.messages()]


def test_sync_wait_failure_names_the_status(vantax_conn: str, vantax_emulator: Any) -> None:
    with pytest.raises(AirflowFailException, match=r"msg_\S+ was not delivered: status 'failed'") as info:
        _send_and_wait("conv_fail_w", poll_interval=0.05)
    (message_id,) = _posted(vantax_emulator)
    assert f"{message_id} was not delivered: status 'failed'" in str(info.value)


def test_sync_wait_timeout_names_message_and_last_status(vantax_conn: str, vantax_emulator: Any) -> None:
    started = time.monotonic()
    with pytest.raises(AirflowException, match=r"to be delivered; last status 'sent'") as info:
        _send_and_wait("conv_stuck_w", poll_interval=0.05, delivery_timeout=0.3)
    (message_id,) = _posted(vantax_emulator)
    assert f"Timed out after 0.3s waiting for Vantax message {message_id} to be delivered" in str(info.value)
    assert not isinstance(info.value, AirflowFailException)  # a retry resumes waiting
    assert time.monotonic() - started >= 0.3


def test_sync_wait_unknown_status_fails_closed(vantax_conn: str, vantax_emulator: Any) -> None:
    vantax_emulator.configure(outcomes={"conv_u": "undelivered"})
    with pytest.raises(AirflowFailException, match=r"'undelivered'.*failing closed") as info:
        _send_and_wait("conv_u", poll_interval=0.05)
    (message_id,) = _posted(vantax_emulator)
    assert message_id in str(info.value)
    # The same task instance again (its derived key: the message is replayed), accepting the status.
    out, ti = _send_and_wait("conv_u", poll_interval=0.05, success_statuses="undelivered")
    assert out["id"] == ti.xcoms["message_id"] == message_id and out["status"] == "undelivered"


def test_sync_wait_survives_transient_errors(vantax_emulator: Any, conn_extra: Any) -> None:
    conn_extra(max_retries=0)
    vantax_emulator.inject("status", status=502, method="GET", times=2)
    out, _ = _send_and_wait("conv_t", poll_interval=0.05)
    assert out["status"] == "delivered"
    assert [r["status"] for r in vantax_emulator.requests() if r["method"] == "GET"][:2] == [502, 502]


@pytest.mark.parametrize(
    ("event", "error", "text"),
    [
        ({"status": "failure", "message": "was not delivered: status 'failed'", "message_id": "m"},
         AirflowFailException, "status 'failed'"),
        ({"status": "unknown", "message": "status 'read' fails closed", "message_id": "m"},
         AirflowFailException, "'read'"),
        ({"status": "timeout", "message": "Timed out waiting for m", "message_id": "m"},
         AirflowException, "Timed out"),
        ({"status": "weird", "message": "", "message_id": "m"}, AirflowException, "Unexpected status"),
        ({"message": "no status"}, AirflowException, "Unexpected event"),
        (None, AirflowException, "Unexpected event"),
    ],
)  # fmt: skip
def test_execute_complete_checks_the_event(event: Any, error: type[Exception], text: str) -> None:
    with pytest.raises(error, match=text):
        operator().execute_complete({}, event)  # type: ignore[arg-type]


def test_execute_complete_success_returns_the_message(vantax_conn: str) -> None:
    message_id = _sent("conv_c")
    time.sleep(0.2)
    ti = FakeTI()
    event = {"status": "success", "message": "", "message_id": message_id, "conversation_id": "conv_c"}
    out = operator().execute_complete({"ti": ti}, event)  # type: ignore[arg-type]
    assert out["id"] == message_id and out["status"] == "delivered" and ti.xcoms["message_id"] == message_id


def test_link_is_empty_without_dashboard_url_and_filled_with_it(
    vantax_emulator: Any, conn_extra: Any
) -> None:
    from vantax_provider.operators.vantax import VantaxConversationLink

    link = VantaxConversationLink()
    conn_extra()
    assert link.get_link(operator(conversation_id="conv/1"), ti_key=SimpleNamespace()) == ""  # type: ignore[arg-type]
    conn_extra(dashboard_url="https://app.example.com/c/{conversation_id}")
    url = link.get_link(operator(conversation_id="conv/1"), ti_key=SimpleNamespace())  # type: ignore[arg-type]
    assert url == "https://app.example.com/c/conv%2F1"


@pytest.mark.real_settle
def test_deferrable_wait_defers_to_the_trigger_with_ids_only(vantax_conn: str, vantax_emulator: Any) -> None:
    try:
        from airflow.sdk.exceptions import TaskDeferred
    except ImportError:  # Airflow < 3.3
        from airflow.exceptions import TaskDeferred  # type: ignore[no-redef,attr-defined]

    from vantax_provider.triggers.vantax import VantaxMessageStatusTrigger

    vantax_emulator.configure(queued_seconds=30)  # still in progress after the look in the worker
    ti = FakeTI()
    op = operator(wait_for_delivery=True, deferrable=True, poll_interval=0.5, delivery_timeout=60)
    before = time.time()
    with pytest.raises(TaskDeferred) as info:
        op.execute({"ti": ti})  # type: ignore[arg-type]
    trigger = info.value.trigger
    assert isinstance(trigger, VantaxMessageStatusTrigger)
    assert info.value.method_name == "execute_complete"
    _, kwargs = trigger.serialize()
    assert kwargs["message_id"] == ti.xcoms["message_id"] == vantax_emulator.messages()[0]["id"]
    assert kwargs["poll_interval"] == 0.5 and before + 60 <= kwargs["end_time"] <= time.time() + 60
    # Not resumed before the scheduler has settled the deferral (apache/airflow#71580, #72716).
    assert before + DEFERRAL_SETTLE_SECONDS <= kwargs["not_before"] <= time.time() + DEFERRAL_SETTLE_SECONDS
    assert set(kwargs) == {
        "conversation_id", "message_id", "vantax_conn_id", "end_time", "poll_interval", "success_statuses",
        "failure_statuses", "not_before",
    }  # fmt: skip
