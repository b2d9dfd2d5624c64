"""
One message per run of a task instance, whatever a retry renders: the intent written before the
POST, the key that does not follow the body, ``on_uncertain``, clearing, and content kept out of
XCom.  Driven in-process with a task context; counted at the emulator, mostly in its mode that
ignores ``Idempotency-Key`` so that the provider, not the emulator, is measured.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.doubles import FakeTI
from tests.doubles import StateStore as Store
from vantax_provider._compat import AirflowFailException
from vantax_provider.operators import _state
from vantax_provider.operators.vantax import VantaxSendMessageOperator


class Crash(Exception):
    """The worker dies after the POST, before the answer is recorded."""


class CrashingSend(VantaxSendMessageOperator):
    """The operator, with a crash right after the POST on the first try only."""

    def _send(self, *args: Any, **kwargs: Any) -> Any:
        message = super()._send(*args, **kwargs)
        raise Crash(message.id)


def context(store: Store | None, *, max_tries: int = 1) -> dict[str, Any]:
    ctx: dict[str, Any] = {"ti": FakeTI(dag_id="d", max_tries=max_tries)}
    if store is not None:
        ctx["task_state_store"] = store
    return ctx


def op(cls: type[VantaxSendMessageOperator] = VantaxSendMessageOperator, **kwargs: Any) -> Any:
    fields = {"task_id": "send", "conversation_id": "conv_once", "channel": "facebook", "content": "x"}
    return cls(**{**fields, **kwargs})


def posts(emu: Any) -> list[dict[str, Any]]:
    return [r for r in emu.requests() if r["method"] == "POST"]


def test_without_a_store_a_re_rendered_retry_cannot_send_a_second_message(
    vantax_conn: str, vantax_emulator: Any
) -> None:
    """Airflow 3.1/3.2: the key no longer follows the body, so the retry reuses it and is refused."""
    op(content="Your code is 111111").execute(context(None))
    with pytest.raises(AirflowFailException, match="already sent a message to conversation 'conv_once'"):
        op(content="Your code is 222222").execute(context(None))
    assert [m["body"]["content"] for m in vantax_emulator.messages()] == ["Your code is 111111"]
    assert len({r["idempotency_key"] for r in posts(vantax_emulator)}) == 1


def test_the_intent_is_stored_before_the_post(vantax_conn: str, vantax_emulator: Any) -> None:
    store = Store()
    out = op(content="hello").execute(context(store))
    first, last = store.history
    assert first["state"] == _state.INTENT and "message_id" not in first
    assert first["body"] == {"channel": "facebook", "content": "hello"}
    assert first["idempotency_key"] == vantax_emulator.messages()[0]["idempotency_key"]
    assert last["state"] == _state.SENT and last["message_id"] == out["id"]


@pytest.mark.parametrize("deduplicate", [True, False], ids=["dedup", "no-dedup"])
def test_a_crash_after_the_post_then_a_re_rendered_retry_resends_the_stored_request(
    vantax_conn: str, vantax_emulator: Any, deduplicate: bool
) -> None:
    vantax_emulator.configure(deduplicate=deduplicate)
    store = Store()
    with pytest.raises(Crash):
        op(CrashingSend, content="Code 111111").execute(context(store))
    out = op(content="Code 222222").execute(context(store))
    sent = posts(vantax_emulator)
    # The retry sent the first try's request, under its key; never the re-rendered content.
    assert [r["idempotency_key"] for r in sent] == [sent[0]["idempotency_key"]] * 2
    assert {m["body"]["content"] for m in vantax_emulator.messages()} == {"Code 111111"}
    assert out["content"] == "Code 111111"
    # A service that deduplicates answers with the first message; one that does not created a second
    # (the documented limit of "resend": use on_uncertain="skip" where that is not acceptable).
    assert len(vantax_emulator.messages()) == (1 if deduplicate else 2)


def test_on_uncertain_skip_does_not_send_again_and_says_so(vantax_conn: str, vantax_emulator: Any) -> None:
    vantax_emulator.configure(deduplicate=False)
    store = Store()
    with pytest.raises(Crash):
        op(CrashingSend, content="Code 111111", on_uncertain="skip").execute(context(store))
    with pytest.raises(AirflowFailException, match=r"may have sent its Vantax message.*on_uncertain='skip'"):
        op(content="Code 222222", on_uncertain="skip").execute(context(store))
    assert len(posts(vantax_emulator)) == 1 and len(vantax_emulator.messages()) == 1


def test_a_retry_after_the_record_skips_the_send(vantax_conn: str, vantax_emulator: Any) -> None:
    vantax_emulator.configure(deduplicate=False)
    store = Store()
    first = op(content="a").execute(context(store))
    again = op(content="b").execute(context(store))
    assert again["id"] == first["id"] and len(posts(vantax_emulator)) == 1


def test_clearing_the_task_sends_a_new_message_unless_the_user_key_is_fixed(
    vantax_conn: str, vantax_emulator: Any
) -> None:
    """A clear raises max_tries: a new run of the task instance, with a new key and a new message."""
    vantax_emulator.configure(deduplicate=False)
    store, fixed_store = Store(), Store()
    op(content="first").execute(context(store, max_tries=1))
    op(content="retry").execute(context(store, max_tries=1))  # a retry: nothing sent
    op(content="after clear").execute(context(store, max_tries=3))  # cleared after try 2
    contents = [m["body"]["content"] for m in vantax_emulator.messages()]
    assert contents == ["first", "after clear"]
    assert len({m["idempotency_key"] for m in vantax_emulator.messages()}) == 2

    op(conversation_id="conv_fixed", content="one", idempotency_key="once-per-run").execute(
        context(fixed_store, max_tries=1)
    )
    op(conversation_id="conv_fixed", content="two", idempotency_key="once-per-run").execute(
        context(fixed_store, max_tries=3)
    )
    assert [
        m["body"]["content"] for m in vantax_emulator.messages() if m["conversation_id"] == "conv_fixed"
    ] == ["one"]


def test_a_refused_send_forgets_its_intent(vantax_conn: str, vantax_emulator: Any) -> None:
    store = Store()
    closed = {"conversation_id": "conv_closed_1", "channel": "whatsapp", "from_phone_number_id": "pn_1"}
    with pytest.raises(AirflowFailException, match="approved template"):
        op(**closed, on_uncertain="skip").execute(context(store))
    assert store.values == {}  # a retry (or a clear) is not mistaken for an uncertain send


def test_on_uncertain_is_checked() -> None:
    with pytest.raises(ValueError, match="on_uncertain"):
        op(on_uncertain="maybe")


def test_content_can_be_kept_out_of_xcom_and_the_store(vantax_conn: str, vantax_emulator: Any) -> None:
    store = Store()
    ctx = context(store)
    out = op(content="Your code is 424242", include_content_in_xcom=False).execute(ctx)
    assert set(out) == {"id", "conversation_id", "channel", "status"}
    assert "424242" not in repr(out) + repr(ctx["ti"].xcoms) + repr(store.values)
    assert "body" not in store.values[_state.SENT_MESSAGE_KEY]


def test_private_content_is_resent_only_when_it_renders_the_same(
    vantax_conn: str, vantax_emulator: Any
) -> None:
    vantax_emulator.configure(deduplicate=False)
    private = {"include_content_in_xcom": False}
    same, other = Store(), Store()
    with pytest.raises(Crash):
        op(CrashingSend, conversation_id="conv_same", content="Code 1", **private).execute(context(same))
    op(conversation_id="conv_same", content="Code 1", **private).execute(context(same))
    with pytest.raises(Crash):
        op(CrashingSend, conversation_id="conv_other", content="Code 1", **private).execute(context(other))
    with pytest.raises(AirflowFailException, match="rendered differently on this try"):
        op(conversation_id="conv_other", content="Code 2", **private).execute(context(other))
    by_conversation = [(m["conversation_id"], m["body"]["content"]) for m in vantax_emulator.messages()]
    assert by_conversation == [("conv_same", "Code 1"), ("conv_same", "Code 1"), ("conv_other", "Code 1")]


def test_a_deferrable_wait_for_a_fast_delivery_does_not_defer(vantax_conn: str, vantax_emulator: Any) -> None:
    """Delivered within the look in the worker: no deferral, so no race with the scheduler."""
    vantax_emulator.configure(queued_seconds=0.3, sent_seconds=0.3)
    out = op(wait_for_delivery=True, deferrable=True, poll_interval=5).execute(context(None))
    assert out["status"] == "delivered"
