from __future__ import annotations

import logging

import pytest

from vantax_provider.exceptions import VantaxValidationError
from vantax_provider.models import (
    NON_TERMINAL_STATUSES,
    TERMINAL_STATUSES,
    Channel,
    Message,
    MessageStatus,
    build_send_request,
)

SMS = {"conversation_id": "conv_1", "channel": "sms", "content": "hi", "from_phone_number_id": "pn_1"}


def errors_of(**fields: object) -> dict[str, str]:
    with pytest.raises(VantaxValidationError) as info:
        build_send_request(**fields)
    return {e.field: e.reason for e in info.value.errors}


def test_status_sets_partition_the_known_statuses() -> None:
    assert {MessageStatus.DELIVERED, MessageStatus.FAILED} == TERMINAL_STATUSES
    assert {MessageStatus.QUEUED, MessageStatus.SENT} == NON_TERMINAL_STATUSES
    assert set(MessageStatus) == TERMINAL_STATUSES | NON_TERMINAL_STATUSES
    assert MessageStatus.is_terminal("delivered") and not MessageStatus.is_terminal("read")


def test_message_parses_unknown_status_and_null_media() -> None:
    msg = Message.model_validate({"id": "m1", "status": "read", "media_url": None, "new_field": 1})
    assert msg.status == "read"
    assert msg.media_url == []
    assert not msg.is_terminal
    assert msg.summary() == {"id": "m1", "conversation_id": None, "channel": None, "status": "read"}


@pytest.mark.parametrize("channel", list(Channel))
def test_minimal_valid_body_per_channel_has_no_nulls(channel: Channel) -> None:
    extra = {"subject": "S"} if channel is Channel.EMAIL else {}
    if channel in (Channel.SMS, Channel.WHATSAPP):
        extra["from_phone_number_id"] = "pn_1"
    body = build_send_request(conversation_id="c", channel=channel.value, content="x", **extra).to_body()
    assert body == {"channel": channel.value, "content": "x", **extra}
    assert None not in body.values()


def test_every_failing_field_is_listed_in_one_error() -> None:
    errors = errors_of(conversation_id=" ", channel="email", content="x" * 4001, html=3, bogus=1)
    assert set(errors) == {"conversation_id", "content", "html", "bogus", "subject"}
    assert "4000" in errors["content"]
    assert "required for channel 'email'" in errors["subject"]
    assert "not a field" in errors["bogus"]


def test_error_message_names_field_and_reason() -> None:
    with pytest.raises(
        VantaxValidationError, match=r"from_phone_number_id: is required for channel 'whatsapp'"
    ):
        build_send_request(conversation_id="c", channel="whatsapp", content="hi")


@pytest.mark.parametrize(
    ("fields", "field", "reason"),
    [
        ({"content": ""}, "content", "at least 1"),
        ({"content": "a\x00b"}, "content", "U+0000"),
        ({"channel": "fax"}, "channel", "sms"),
        ({"conversation_id": "c\n1"}, "conversation_id", "U+000A"),
        ({"conversation_id": "x" * 257}, "conversation_id", "256"),
        ({"media_url": ["ftp://x/y"]}, "media_url", "absolute http(s)"),
        ({"media_url": ["/relative.jpg"]}, "media_url", "absolute http(s)"),
        ({"media_url": ["https://a.example/has space.jpg"]}, "media_url", "white space"),
        ({"media_url": 5}, "media_url", "list"),
    ],
)
def test_field_rules(fields: dict[str, object], field: str, reason: str) -> None:
    errors = errors_of(**{**SMS, **fields})
    assert field in errors
    assert reason in errors[field]


def test_subject_rules_for_email() -> None:
    base = {"conversation_id": "c", "channel": "email", "content": "x"}
    assert "255" in errors_of(**base, subject="s" * 256)["subject"]
    assert "U+000D" in errors_of(**base, subject="Hello\r\nBcc: x@y")["subject"]
    assert build_send_request(**base, subject="s" * 255).subject == "s" * 255


def test_content_limits_count_characters_not_bytes() -> None:
    emoji = "\N{GRINNING FACE}" * 4000
    assert build_send_request(**{**SMS, "content": emoji}).content == emoji
    text = "line1\nline2\ttab\r\n"
    assert build_send_request(**{**SMS, "content": text}).content == text


def test_fields_a_channel_ignores_are_dropped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        email = build_send_request(
            conversation_id="c", channel="email", content="x", subject="s",
            media_url=["https://a.example/x.jpg"], from_phone_number_id="pn",
        )  # fmt: skip
        sms = build_send_request(**SMS, subject="s", html="<p>x</p>")
    assert email.to_body() == {"channel": "email", "content": "x", "subject": "s"}
    assert sms.to_body() == {"channel": "sms", "content": "hi", "from_phone_number_id": "pn_1"}
    assert "ignores media_url, from_phone_number_id" in caplog.text
    assert "ignores subject, html" in caplog.text


def test_channel_is_case_insensitive_and_media_string_becomes_list() -> None:
    req = build_send_request(**{**SMS, "channel": " SMS ", "media_url": "https://a.example/x.jpg"})
    assert req.channel is Channel.SMS
    assert req.to_body()["media_url"] == ["https://a.example/x.jpg"]
    assert "media_url" not in build_send_request(**{**SMS, "media_url": []}).to_body()
