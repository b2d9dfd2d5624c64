from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import datetime, timezone

import pytest

from vantax_provider.emulator.testing import Emulator
from vantax_provider.exceptions import (
    VantaxAuthenticationError,
    VantaxConfigurationError,
    VantaxMessagingWindowError,
    VantaxValidationError,
)
from vantax_provider.hooks._retry import RetryPolicy, parse_retry_after
from vantax_provider.hooks._settings import normalise_base_url  # internal helpers, tested directly
from vantax_provider.hooks._wire import path_segment
from vantax_provider.hooks.vantax import VantaxHook

CHANNELS = {
    "sms": {"from_phone_number_id": "pn_1", "media_url": ["https://cdn.example.com/a.jpg"]},
    "whatsapp": {"from_phone_number_id": "pn_1"},
    "facebook": {"media_url": ["https://cdn.example.com/a.jpg"]},
    "instagram": {},
    "email": {"subject": "Hello", "html": "<p>Hi <b>there</b></p>"},
}


@pytest.mark.parametrize("channel", list(CHANNELS))
def test_each_channel_round_trips(
    make_hook: Callable[..., VantaxHook], vantax_emulator: Emulator, channel: str
) -> None:
    hook = make_hook()
    sent = hook.send_message(
        "conv_1", channel=channel, content="Hi \N{WAVING HAND SIGN}", **CHANNELS[channel]
    )
    assert sent.channel == channel and sent.status in ("queued", "sent")
    read = hook.get_message("conv_1", sent.id)
    assert read.id == sent.id and read.content == "Hi \N{WAVING HAND SIGN}"
    [received] = vantax_emulator.messages()
    assert received["body"] == {"channel": channel, "content": "Hi \N{WAVING HAND SIGN}", **CHANNELS[channel]}
    assert vantax_emulator.stats()["nulls_received"] == 0


def test_status_moves_to_delivered(make_hook: Callable[..., VantaxHook], vantax_emulator: Emulator) -> None:
    vantax_emulator.configure(queued_seconds=0.01, sent_seconds=0.01)
    hook = make_hook()
    message = hook.send_message("conv_1", channel="instagram", content="x")
    import time

    time.sleep(0.1)
    assert hook.get_message("conv_1", message.id).status == "delivered"


def test_async_twins_share_the_rules(make_hook: Callable[..., VantaxHook], vantax_emulator: Emulator) -> None:
    hook = make_hook()

    async def run() -> tuple[str, str]:
        sent = await hook.asend_message(
            "conv_1", channel="email", content="x", subject="s", idempotency_key="k1"
        )
        again = await hook.asend_message(
            "conv_1", channel="email", content="x", subject="s", idempotency_key="k1"
        )
        read = await hook.aget_message("conv_1", sent.id)
        assert again.id == sent.id
        await hook.aclose()
        return sent.id, read.id

    first, second = asyncio.run(run())
    assert first == second
    assert vantax_emulator.stats()["created"] == 1
    assert vantax_emulator.stats()["replayed"] == 1


def test_one_pooled_client_is_reused(make_hook: Callable[..., VantaxHook], vantax_emulator: Emulator) -> None:
    hook = make_hook()
    client = hook.get_conn()
    for _ in range(3):
        hook.send_message("conv_1", channel="instagram", content="x")
    assert hook.get_conn() is client
    assert client.headers["User-Agent"].startswith("airflow-provider-vantax/")


def test_validation_fails_before_any_request(
    make_hook: Callable[..., VantaxHook], vantax_emulator: Emulator
) -> None:
    with pytest.raises(VantaxValidationError) as info:
        make_hook().send_message("conv_1", channel="sms", content="")
    assert set(info.value.fields) == {"content", "from_phone_number_id"}
    assert vantax_emulator.stats()["requests"] == 0


def test_default_sender_number_comes_from_the_connection(
    make_hook: Callable[..., VantaxHook], vantax_emulator: Emulator
) -> None:
    hook = make_hook(default_from_phone_number_id="pn_default")
    hook.send_message("conv_1", channel="whatsapp", content="x")
    hook.send_message("conv_1", channel="sms", content="x", from_phone_number_id="pn_own")
    hook.send_message("conv_1", channel="facebook", content="x")
    bodies = [m["body"] for m in vantax_emulator.messages()]
    assert [b.get("from_phone_number_id") for b in bodies] == ["pn_default", "pn_own", None]


def test_messaging_window_error_advises_a_template(make_hook: Callable[..., VantaxHook]) -> None:
    with pytest.raises(VantaxMessagingWindowError, match="approved template") as info:
        make_hook().send_message("conv_closed_1", channel="whatsapp", content="x", from_phone_number_id="pn")
    assert info.value.status_code == 422


def test_ids_cannot_change_the_path(make_hook: Callable[..., VantaxHook], vantax_emulator: Emulator) -> None:
    hook = make_hook()
    for conversation_id in ["../x", "..", ".", "a/b", "50% off", "a b", "x?y#z", "é\N{SNOWMAN}"]:
        sent = hook.send_message(conversation_id, channel="instagram", content="x")
        assert sent.conversation_id == conversation_id
        assert hook.get_message(conversation_id, sent.id).conversation_id == conversation_id
    for entry in vantax_emulator.requests():
        segments = entry["path"].split("/")
        assert segments[:3] == ["", "v1", "conversations"] and segments[4] == "messages"
        assert len(segments) == (5 if entry["kind"] == "create" else 6)


def test_path_segment_encodes_every_separator() -> None:
    assert path_segment("../x") == "%2E%2E%2Fx"
    assert path_segment("a b%c?d#e") == "a%20b%25c%3Fd%23e"


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        (None, "https://api.vantaxai.com"),
        ("api.eu.example.com", "https://api.eu.example.com"),
        ("https://proxy.example.com/vantax/", "https://proxy.example.com/vantax"),
        ("http://127.0.0.1:8040", "http://127.0.0.1:8040"),
        ("http://localhost:1", "http://localhost:1"),
        ("http://[::1]:8040", "http://[::1]:8040"),
    ],
)
def test_base_url(host: str | None, expected: str) -> None:
    assert normalise_base_url(host) == expected


@pytest.mark.parametrize("host", ["http://api.vantaxai.com", "http://10.0.0.5", "http://127.example.com"])
def test_plain_http_is_refused_off_loopback(host: str) -> None:
    with pytest.raises(VantaxConfigurationError, match="Refusing plain http"):
        normalise_base_url(host)


@pytest.mark.parametrize(
    "host", ["ftp://x.example.com", "https://user:pw@x.example.com", "https://x.example.com?a=1"]
)
def test_odd_base_urls_are_refused(host: str) -> None:
    with pytest.raises(VantaxConfigurationError):
        normalise_base_url(host)


def test_plain_http_host_fails_before_any_request(
    make_hook: Callable[..., VantaxHook], vantax_emulator: Emulator
) -> None:
    with pytest.raises(VantaxConfigurationError):
        make_hook(host="http://vantax.example.com").send_message("c", channel="instagram", content="x")
    assert vantax_emulator.stats()["requests"] == 0


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"timeout": "soon"}, "'timeout' must be a number"),
        ({"max_retries": -1}, "'max_retries' must be at least"),
    ],
)
def test_bad_connection_extras_name_the_extra(
    make_hook: Callable[..., VantaxHook], extra: dict[str, object], match: str
) -> None:
    with pytest.raises(VantaxConfigurationError, match=match):
        _ = make_hook(**extra).settings


def test_missing_api_key_is_a_clear_error(make_hook: Callable[..., VantaxHook]) -> None:
    with pytest.raises(VantaxConfigurationError, match="no API key"):
        _ = make_hook(api_key="").settings


def test_the_api_key_never_shows(
    make_hook: Callable[..., VantaxHook],
    vantax_emulator: Emulator,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG")
    wrong_key = "vx_live_WRONGKEY0123456789"
    bad = make_hook(api_key=wrong_key)
    with pytest.raises(VantaxAuthenticationError) as info:
        bad.send_message("conv_1", channel="instagram", content="x")
    good = make_hook()
    vantax_emulator.inject("status", status=503, method="POST")
    good.send_message("conv_1", channel="instagram", content="x")
    texts = [
        str(info.value),
        repr(info.value),
        repr(bad),
        repr(bad.settings),
        repr(good.settings),
        repr(good),
    ]
    texts += [caplog.text, capsys.readouterr().out, json.dumps(vantax_emulator.requests())]
    for text in texts:
        assert wrong_key not in text
        assert vantax_emulator.api_key not in text
    assert "API key" in str(info.value)  # the advice


def test_test_connection(make_hook: Callable[..., VantaxHook]) -> None:
    assert make_hook().test_connection()[0] is True
    ok, text = make_hook(api_key="vx_test_wrong").test_connection()
    assert not ok and "refused the API key" in text


def test_parse_retry_after() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Thu, 01 Jan 2026 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    policy = RetryPolicy(backoff_base=1, backoff_max=8)
    for retry, ceiling in [(0, 1), (1, 2), (2, 4), (3, 8), (10, 8)]:
        waits = {policy.backoff(retry) for _ in range(50)}
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert len(waits) > 1
