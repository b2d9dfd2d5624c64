"""The bulk operator's execute() against the emulator, with a minimal task context."""

from __future__ import annotations

from typing import Any

import pytest

from vantax_provider._compat import AirflowException, AirflowFailException
from vantax_provider.operators.vantax_bulk import (
    FAILED_RESULT_XCOM_KEY,
    VantaxBulkSendMessageOperator,
    read_report,
)


def _recipients(n: int, prefix: str = "conv_b") -> list[dict[str, Any]]:
    return [{"cid": f"{prefix}{i:03d}", "name": f"Name{i}", "code": i * 7} for i in range(n)]


def _op(recipients: Any, **kwargs: Any) -> VantaxBulkSendMessageOperator:
    fields: dict[str, Any] = {
        "conversation_id": "{{ recipient.cid }}",
        "channel": "email",
        "subject": "Hello from {{ params.brand }}",
        "content": "Hi {{ recipient.name }}, code {{ recipient.code }} ({{ ds }})",
    }
    fields.update(kwargs)
    return VantaxBulkSendMessageOperator(task_id="bulk", recipients=recipients, **fields)


def test_each_recipient_gets_their_own_rendered_message(emu, context) -> None:  # type: ignore[no-untyped-def]
    recipients = _recipients(25)
    result = _op(recipients, media_url=["https://cdn.example.com/{{ recipient.cid }}.png"], channel="sms",
                 from_phone_number_id="pn_1").execute(context())  # fmt: skip

    assert {k: result[k] for k in ("total", "sent", "failed", "invalid", "skipped_already_sent")} == {
        "total": 25, "sent": 25, "failed": 0, "invalid": 0, "skipped_already_sent": 0,
    }  # fmt: skip
    by_conversation = {m["conversation_id"]: m for m in emu.messages()}
    assert len(by_conversation) == 25 and emu.stats()["created"] == 25
    for i, r in enumerate(recipients):
        body = by_conversation[r["cid"]]["body"]
        assert body["content"] == f"Hi Name{i}, code {i * 7} (2025-01-01)"
        assert body["media_url"] == [f"https://cdn.example.com/{r['cid']}.png"]
        assert "subject" not in body  # sms ignores it
    keys = [m["idempotency_key"] for m in emu.messages()]
    assert len(set(keys)) == 25 and all(k.startswith("airflow-") for k in keys)
    assert result["outcomes"] == [] and result["truncated"] is False  # nobody needs attention
    outcomes = list(read_report(result["report"]))  # every recipient is in the report
    assert [o["index"] for o in outcomes] == list(range(25))
    assert all(o["outcome"] == "sent" and o["message_id"] in emu_ids(emu) for o in outcomes)
    assert not any("content" in o for o in outcomes)  # never the body in the report


def emu_ids(emu: Any) -> set[str]:
    return {m["id"] for m in emu.messages()}


def test_same_task_instance_derives_the_same_keys(emu, context) -> None:  # type: ignore[no-untyped-def]
    recipients = _recipients(10)
    _op(recipients).execute(context())
    first = sorted(m["idempotency_key"] for m in emu.messages())
    emu.reset()
    _op(recipients).execute(context())
    assert sorted(m["idempotency_key"] for m in emu.messages()) == first


def test_missing_key_fails_that_recipient_only_naming_field_and_key(emu, context) -> None:  # type: ignore[no-untyped-def]
    recipients = _recipients(12)
    del recipients[4]["name"]
    recipients[7] = {"cid": "conv_b_nocode", "name": "X"}
    ctx = context()
    with pytest.raises(AirflowException, match="2 of 12 Vantax recipients failed"):
        _op(recipients).execute(ctx)

    assert emu.stats()["created"] == 10  # the others were sent
    assert "conv_b004" not in {m["conversation_id"] for m in emu.messages()}
    result = ctx["ti"].xcoms[FAILED_RESULT_XCOM_KEY]
    assert (result["invalid"], result["sent"]) == (2, 10)
    bad = {o["index"]: o for o in result["outcomes"] if o["outcome"] == "invalid"}
    assert set(bad) == {4, 7}
    assert bad[4]["error"].startswith("content:") and "'name'" in bad[4]["error"]
    assert "'code'" in bad[7]["error"]
    assert bad[4]["conversation_id"] == "conv_b004"


def test_template_syntax_error_fails_before_any_request(emu, context) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(AirflowFailException, match="content: is not a valid template"):
        _op(_recipients(5), content="Hi {{ recipient.name ").execute(context())
    assert emu.stats()["requests"] == 0


def test_sandbox_blocks_unsafe_attribute_access(emu, context) -> None:  # type: ignore[no-untyped-def]
    op = _op(_recipients(3), content="{{ recipient.__class__.__mro__ }}", max_failure_ratio=1.0)
    result = op.execute(context())
    assert result["invalid"] == 3 and emu.stats()["requests"] == 0
    error = result["outcomes"][0]["error"]
    assert "could not be rendered: SecurityError" in error and "'__class__'" in error, error


def test_validation_failures_are_reported_and_not_sent(emu, context) -> None:  # type: ignore[no-untyped-def]
    recipients = _recipients(6)
    recipients[2]["cid"] = ""  # empty conversation id
    op = _op(recipients, channel="{{ recipient.channel | default('email') }}", max_failure_ratio=0.5)
    recipients[5]["channel"] = "sms"  # sms without a sending number
    result = op.execute(context())
    assert (result["sent"], result["invalid"]) == (4, 2) and emu.stats()["created"] == 4
    errors = {o["index"]: o["error"] for o in result["outcomes"] if o["outcome"] == "invalid"}
    assert "conversation_id" in errors[2] and "from_phone_number_id" in errors[5]


class TestFailurePolicy:
    def _run(self, emu: Any, context: Any, **kwargs: Any) -> tuple[dict[str, Any] | None, Any]:
        # conv_b001 and conv_b002 are refused by the API (400): 2 of 20 fail.
        for cid in ("conv_b001", "conv_b002"):
            emu.inject("status", status=400, method="POST", conversation_id=cid, times=None)
        ctx = context()
        try:
            return _op(_recipients(20), **kwargs).execute(ctx), ctx
        except AirflowException as exc:
            return None, (ctx, exc)

    def test_default_fails_on_any_failure_after_sending_the_rest(self, emu, context) -> None:  # type: ignore[no-untyped-def]
        result, (ctx, exc) = self._run(emu, context)
        assert result is None and "2 of 20" in str(exc) and "HTTP 400" in str(exc)
        assert emu.stats()["created"] == 18
        stored = ctx["ti"].xcoms[FAILED_RESULT_XCOM_KEY]
        assert (stored["sent"], stored["failed"]) == (18, 2)
        failed = [o for o in stored["outcomes"] if o["outcome"] == "failed"]
        assert {o["conversation_id"] for o in failed} == {"conv_b001", "conv_b002"}
        assert all("InvalidRequest" in o["error"] and "vx_test" not in o["error"] for o in failed)

    def test_ratio_within_the_limit_succeeds(self, emu, context) -> None:  # type: ignore[no-untyped-def]
        result, _ = self._run(emu, context, max_failure_ratio=0.1)
        assert result is not None and (result["sent"], result["failed"]) == (18, 2)

    def test_ratio_over_the_limit_fails(self, emu, context) -> None:  # type: ignore[no-untyped-def]
        result, (_, exc) = self._run(emu, context, max_failure_ratio=0.05)
        assert result is None and "max_failure_ratio=0.05" in str(exc)


def test_a_429_pauses_the_whole_batch_without_a_retry_storm(emu, context) -> None:  # type: ignore[no-untyped-def]
    emu.configure(latency_ms=20)
    # The message to conv_b014 gets 429 Retry-After: 1 once; every other request succeeds.
    emu.inject("status", status=429, retry_after="1", method="POST", conversation_id="conv_b014", times=1)
    result = _op(_recipients(60), max_concurrency=8).execute(context())
    assert result["sent"] == 60 and emu.stats()["created"] == 60

    posts = [r for r in emu.requests() if r["method"] == "POST"]
    assert len(posts) == 61  # one retry, of the refused message only
    refused = next(r for r in posts if r["status"] == 429)
    answered = refused["t"] + refused["duration"]
    # Requests already in flight when the 429 came back may land just after it; then silence.
    later = sorted(r["t"] for r in posts if r["t"] > answered + 0.1)
    assert later, "nothing was sent after the 429"
    assert later[0] - answered >= 0.9, f"the batch resumed {later[0] - answered:.2f}s after the 429"
    assert len([r for r in posts if answered < r["t"] <= answered + 0.1]) <= 8


def test_rate_limit_holds_on_the_servers_clock(emu, context) -> None:  # type: ignore[no-untyped-def]
    rate, n = 25.0, 50
    result = _op(_recipients(n), rate_limit=rate, max_concurrency=16).execute(context())
    assert result["sent"] == n
    arrivals = sorted(r["t"] for r in emu.requests() if r["method"] == "POST")
    assert len(arrivals) == n
    span = arrivals[-1] - arrivals[0]
    assert span >= (n - 1) / rate * 0.9, f"{n} requests in {span:.2f}s is faster than {rate}/s"
    # No one-second window on the server's clock holds more than rate (+1 for the window's edges).
    for i, start in enumerate(arrivals):
        in_window = sum(1 for t in arrivals[i:] if t < start + 1.0)
        assert in_window <= rate + 1


def test_recipients_must_be_a_list(emu, context) -> None:  # type: ignore[no-untyped-def]
    from vantax_provider._compat import AirflowFailException

    with pytest.raises(AirflowFailException, match="recipients must be a list"):
        _op("[{'cid': 'x'}]").execute(context())


def test_empty_list_sends_nothing_and_succeeds(emu, context) -> None:  # type: ignore[no-untyped-def]
    assert _op([]).execute(context())["total"] == 0
    assert emu.stats()["requests"] == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"rate_limit": 0}, "rate_limit"),
        ({"max_failure_ratio": 1.5}, "max_failure_ratio"),
        ({"checkpoint_interval": 0}, "checkpoint_interval"),
    ],
)
def test_bad_arguments_are_refused_at_parse_time(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _op([], **kwargs)


def test_message_fields_are_not_airflow_template_fields() -> None:
    op = _op([])
    assert set(op.template_fields) == {"recipients", "vantax_conn_id", "report_path", "report_conn_id"}
    assert op.message_fields["content"].startswith("Hi {{ recipient.name }}")


def test_a_json_null_fails_that_recipient_instead_of_rendering_none(emu, context) -> None:  # type: ignore[no-untyped-def]
    """Issue 9 item 8: null rendered "Hi None" and posted to conversation "None"."""
    recipients = _recipients(4)
    recipients[1]["name"] = None
    recipients[2]["cid"] = None
    recipients[3]["name"] = None
    op = _op(recipients, max_failure_ratio=1.0)
    op.message_fields["content"] = "Hi {{ recipient.name }}"
    result = op.execute(context())
    assert (result["sent"], result["invalid"]) == (1, 3)
    assert "None" not in {m["conversation_id"] for m in emu.messages()}
    assert all("None" not in m["body"]["content"] for m in emu.messages())
    errors = {o["index"]: o.get("error", "") for o in result["outcomes"]}
    assert errors[1].startswith("content:") and "'name' is null" in errors[1]
    assert errors[2].startswith("conversation_id:") and "'cid' is null" in errors[2]


def test_a_template_that_handles_null_sends(emu, context) -> None:  # type: ignore[no-untyped-def]
    recipients = [{"cid": "conv_null1", "name": None}, {"cid": "conv_null2", "name": "Ada"}]
    content = "Hi {{ recipient.name | default('there') }}{% if recipient.name %}!{% endif %}"
    result = _op(recipients, content=content).execute(context())
    assert result["sent"] == 2
    bodies = {m["conversation_id"]: m["body"]["content"] for m in emu.messages()}
    assert bodies == {"conv_null1": "Hi there", "conv_null2": "Hi Ada!"}


@pytest.mark.parametrize(
    ("recipient", "reason"),
    [
        ({"cid": "conv_x", 1: "a"}, "has a key of type int"),
        ({"cid": "conv_x", "tags": {"a", "b"}}, "recipient.tags is a set"),
        ({"cid": "conv_x", "score": float("nan")}, "recipient.score is nan"),
        ({"cid": "conv_x", "when": object()}, "recipient.when is a object"),
        ("conv_x", "must be a dict"),
    ],
)
def test_a_recipient_that_is_not_json_is_invalid_not_a_crash(emu, context, recipient, reason) -> None:  # type: ignore[no-untyped-def]
    """Issue 9 item 10: mixed key types raised a raw TypeError; a set gave a per-process fingerprint."""
    recipients = [*_recipients(2), recipient]
    result = _op(recipients, max_failure_ratio=1.0).execute(context())
    assert (result["sent"], result["invalid"]) == (2, 1) and emu.stats()["created"] == 2
    [invalid] = result["outcomes"]
    assert invalid["index"] == 2 and reason in invalid["error"]


def test_skip_does_not_repeat_a_request_that_may_have_created_the_message(emu, context, conn_extra) -> None:  # type: ignore[no-untyped-def]
    """Issue 14: the service ignores keys and answers 500 after creating; resend repeats it, skip does not."""
    conn_extra(max_retries=2, retry_backoff=0.01)
    emu.configure(deduplicate=False)
    emu.inject("status", status=500, when="after", method="POST", conversation_id="conv_b003", times=1)
    result = _op(_recipients(6), on_uncertain="skip").execute(context())
    assert (result["sent"], result["maybe_sent"], result["failed"]) == (5, 1, 0)
    third = list(read_report(result["report"]))[3]
    assert result["outcomes"] == [third]
    assert third["outcome"] == "maybe_sent" and "HTTP 500" in third["error"]
    assert [m["conversation_id"] for m in emu.messages()].count("conv_b003") == 1

    emu.reset()
    emu.configure(deduplicate=False)
    emu.inject("status", status=500, when="after", method="POST", conversation_id="conv_b003", times=1)
    resent = _op(_recipients(6)).execute(context())
    assert resent["sent"] == 6  # the hook repeated it under its key, which this service ignores
    assert [m["conversation_id"] for m in emu.messages()].count("conv_b003") == 2


def test_bad_on_uncertain_and_key_field_are_refused_at_parse_time() -> None:
    with pytest.raises(ValueError, match="on_uncertain"):
        _op([], on_uncertain="maybe")
    with pytest.raises(ValueError, match="idempotency_key_field"):
        _op([], idempotency_key_field="")
