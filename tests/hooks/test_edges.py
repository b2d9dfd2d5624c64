"""
The hook at the edges users reach (issues 9 and 15): pasted keys, echoed keys in any form,
proxies from the environment, odd success answers, huge error texts, Retry-After values that
would drop the backoff, /v1 base URLs, connection URIs and typed extras.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import pytest

from tests.hooks._canned import Canned, canned_server
from vantax_provider.emulator.testing import Emulator
from vantax_provider.exceptions import (
    MAX_ERROR_TEXT,
    MAX_SERVER_TEXT,
    VantaxAuthenticationError,
    VantaxConfigurationError,
    VantaxError,
    VantaxNotFoundError,
    VantaxRateLimitError,
    VantaxRequestError,
    VantaxResponseError,
    VantaxValidationError,
)
from vantax_provider.hooks._retry import RetryPolicy, parse_retry_after
from vantax_provider.hooks._settings import normalise_base_url
from vantax_provider.hooks._wire import Attempts
from vantax_provider.hooks.vantax import VantaxHook
from vantax_provider.models import build_send_request
from vantax_provider.status import TRANSIENT_ERRORS

KEY = "vx_test_EDGE0123456789abcdef"
IG = {"channel": "instagram", "content": "hi"}


@pytest.fixture
def canned() -> Iterator[Canned]:
    with canned_server() as server:
        yield server


@pytest.fixture
def conn(monkeypatch: pytest.MonkeyPatch) -> Callable[..., VantaxHook]:
    """A hook on a connection given as JSON fields (host, password, extras...)."""
    count = iter(range(1000))

    def make(host: str, password: str = KEY, **fields: Any) -> VantaxHook:
        conn_id = f"vantax_edge_{next(count)}"
        extra = {"retry_backoff": 0.01, "timeout": 5, **fields.pop("extra", {})}
        conn = {"conn_type": "vantax", "host": host, "password": password, "extra": extra, **fields}
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
        return VantaxHook(conn_id)

    return make


def _all_text(exc: BaseException) -> str:
    """The text of an exception and of every exception chained to it."""
    texts, seen = [], set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts += [str(current), repr(current), repr(current.args)]
        current = current.__cause__ or current.__context__
    return "\n".join(texts)


# -- item 1: a pasted key ---------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["\n", "\r\n", " ", "\t", "\u00a0\n"])
def test_a_pasted_key_with_surrounding_white_space_works(
    make_hook: Callable[..., VantaxHook], vantax_emulator: Emulator, suffix: str
) -> None:
    hook = make_hook(api_key=f" {vantax_emulator.api_key}{suffix}")
    assert hook.send_message("conv_paste", **IG).id  # type: ignore[arg-type]
    assert hook.test_connection()[0] is True
    assert [r["authorization_ok"] for r in vantax_emulator.requests() if r["method"] == "POST"] == [True]


@pytest.mark.parametrize("inner", ["\n", "\u200b", "\u00e9", "\x00", " "])
def test_a_key_with_other_characters_is_refused_without_showing_it(
    make_hook: Callable[..., VantaxHook], vantax_emulator: Emulator, inner: str
) -> None:
    key = f"vx_test_SECRETPART{inner}MORESECRET"
    hook = make_hook(api_key=key)
    with pytest.raises(VantaxConfigurationError, match="visible ASCII") as info:
        hook.send_message("conv_bad_key", **IG)  # type: ignore[arg-type]
    text = _all_text(info.value)
    assert "vantax_test_" in text  # names the connection
    assert "SECRETPART" not in text and "MORESECRET" not in text
    ok, answer = hook.test_connection()
    assert not ok and "visible ASCII" in answer and "SECRETPART" not in answer
    assert vantax_emulator.stats()["requests"] == 0


def test_a_request_httpx_refuses_fails_at_once_without_the_key(
    make_hook: Callable[..., VantaxHook], vantax_emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A header httpx will not build: nothing was sent, so no retry, and no key in text or cause."""
    hook = make_hook(max_retries=5)
    bad_key = vantax_emulator.api_key + "\n"
    hook._settings = replace(hook.settings, api_key=bad_key)  # as the settings were read before the check
    sleeps: list[float] = []
    monkeypatch.setattr(time, "sleep", sleeps.append)
    with pytest.raises(VantaxRequestError, match="nothing was sent") as info:
        hook.send_message("conv_refused", **IG)  # type: ignore[arg-type]
    text = _all_text(info.value)
    assert vantax_emulator.api_key not in text
    assert repr(bad_key.encode())[2:-1] not in text
    assert sleeps == [] and vantax_emulator.stats()["requests"] == 0


def _echo(key: str) -> str:
    return " | ".join([
        key, repr(key), repr(key.encode()), quote(key, safe=""),
        base64.b64encode(key.encode()).decode(), base64.b64encode(f"x:{key}".encode()).decode(),
        json.dumps({"auth": f"Bearer {key}"}),
    ])  # fmt: skip


def test_every_form_of_an_echoed_key_is_scrubbed(canned: Canned, conn: Callable[..., VantaxHook]) -> None:
    key = "vx_test_K+/=\\'\"%~weird0123456789"
    canned.answer(401, json.dumps({"success": False, "message": _echo(key)}))
    hook = conn(canned.url, password=key)
    with pytest.raises(VantaxAuthenticationError) as info:
        hook.send_message("conv_echo", **IG)  # type: ignore[arg-type]
    text = _all_text(info.value) + repr(info.value.api_message)
    for form in (key, repr(key)[1:-1], repr(key.encode())[2:-1], quote(key, safe=""),
                 base64.b64encode(key.encode()).decode().rstrip("="), key.replace("\\", "\\\\")):  # fmt: skip
        assert form not in text
    assert "***" in text
    ok, answer = hook.test_connection()
    assert not ok and key not in answer and quote(key, safe="") not in answer


# -- item 2: proxies --------------------------------------------------------------------------


def test_proxies_from_the_environment_are_not_used(
    make_hook: Callable[..., VantaxHook],
    vantax_emulator: Emulator,
    canned: Canned,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, canned.url)
    canned.answer(502, "proxy")
    hook = make_hook()
    assert hook.send_message("conv_env_proxy", **IG).id  # type: ignore[arg-type]
    assert canned.count() == 0
    assert vantax_emulator.stats()["requests"] == 1


def test_the_proxy_extra_is_used_and_checked(canned: Canned, conn: Callable[..., VantaxHook]) -> None:
    canned.answer(201, json.dumps({"success": True, "data": {"id": "msg_via_proxy", "status": "queued"}}))
    # A plain-http base through a proxy needs the opt-in, for a loopback proxy (test_network_edges).
    hook = conn("http://127.0.0.1:9", extra={"proxy": canned.url, "allow_plain_http_proxy": True})
    assert hook.send_message("conv_proxy", **IG).id == "msg_via_proxy"  # type: ignore[arg-type]
    assert canned.received[0]["path"] == "http://127.0.0.1:9/v1/conversations/conv_proxy/messages"
    for bad in ("ftp://proxy.example.com", "proxy.example.com:8080", "http://", 8080):
        with pytest.raises(VantaxConfigurationError, match="'proxy'"):
            _ = conn("https://api.vantaxai.com", extra={"proxy": bad}).settings


# -- item 3: odd success answers ----------------------------------------------------------------


def _data(**data: Any) -> str:
    return json.dumps({"success": True, "message": "ok", "data": data})


@pytest.mark.parametrize(
    "data", [{"id": 123}, {"id": None}, {"id": ""}, {"id": "x" * 5000}, {"id": ["m"]}], ids=str
)
def test_a_create_answer_without_a_usable_id_is_a_typed_error(
    canned: Canned, conn: Callable[..., VantaxHook], data: dict[str, Any]
) -> None:
    canned.answer(201, _data(**data))
    with pytest.raises(VantaxResponseError, match="does not fit") as info:
        conn(canned.url).send_message("conv_odd", **IG)  # type: ignore[arg-type]
    assert len(str(info.value)) < MAX_ERROR_TEXT and info.value.__cause__ is None


def test_a_create_answer_with_a_string_id_counts_as_created(
    canned: Canned, conn: Callable[..., VantaxHook]
) -> None:
    canned.answer(201, _data(id="msg_odd", status=None, created_at="yesterday", media_url=7, channel=5))
    message = conn(canned.url).send_message("conv_odd", **IG)  # type: ignore[arg-type]
    assert (message.id, message.status, message.created_at, message.media_url) == (
        "msg_odd",
        "queued",
        None,
        [],
    )


def test_async_create_with_odd_fields_counts_as_created(
    canned: Canned, conn: Callable[..., VantaxHook]
) -> None:
    canned.answer(200, _data(id="msg_odd_async", status={"a": 1}))
    hook = conn(canned.url)

    async def send() -> str:
        try:
            return (await hook.asend_message("conv_odd", **IG)).id  # type: ignore[arg-type]
        finally:
            await hook.aclose()

    assert asyncio.run(send()) == "msg_odd_async"


@pytest.mark.parametrize(
    "data", [{"id": "m1", "status": None}, {"id": "m1", "created_at": "yesterday"}, {"id": 123}], ids=str
)
def test_a_status_read_with_an_odd_body_is_a_transient_typed_error(
    canned: Canned, conn: Callable[..., VantaxHook], data: dict[str, Any]
) -> None:
    canned.answer(200, _data(**data))
    with pytest.raises(VantaxResponseError) as info:
        conn(canned.url, extra={"max_retries": 1}).get_message("conv_odd", "m1")
    assert isinstance(info.value, TRANSIENT_ERRORS)  # the waits poll through it
    assert canned.count() == 2  # the hook itself retried the read once
    assert "ValidationError" not in _all_text(info.value)


# -- item 7: bounded server text ----------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 500])
def test_a_huge_server_text_is_cut(canned: Canned, conn: Callable[..., VantaxHook], status: int) -> None:
    canned.answer(status, json.dumps({"success": False, "message": "E" * 200_000}))
    with pytest.raises(VantaxError) as info:
        conn(canned.url, extra={"max_retries": 0}).send_message("conv_big", **IG)  # type: ignore[arg-type]
    assert len(str(info.value)) <= MAX_ERROR_TEXT
    assert info.value.api_message is not None and len(info.value.api_message) <= MAX_SERVER_TEXT
    assert "more characters" in info.value.api_message


# -- item 10: the small ones ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"channel": "instagram", "content": "   \n\t"}, "content"),
        ({"channel": "email", "content": "x", "subject": "  "}, "subject"),
        ({"channel": "email", "content": "x", "subject": "Hi\u2028Bcc: a@b.c"}, "subject"),
        ({"channel": "email", "content": "x", "subject": "Hi\u2029there"}, "subject"),
    ],
)
def test_blank_text_and_unicode_line_breaks_are_refused(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(VantaxValidationError) as info:
        build_send_request(conversation_id="c", **fields)
    assert info.value.fields == (field,)


def test_the_media_url_error_names_the_entry_not_the_url() -> None:
    # A URL may carry phone data or content (docs/operators/bulk-send.md): the position is enough.
    with pytest.raises(VantaxValidationError) as info:
        build_send_request(conversation_id="c", channel="sms", content="x", from_phone_number_id="p",
                           media_url=["https://x.io/a.jpg", "ftp://cdn.example.com/b.jpg"])  # fmt: skip
    assert str(info.value).endswith("media_url: entry 1 is not an absolute http(s) URL")
    assert "cdn.example.com" not in str(info.value) and "{" not in str(info.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("timeout", "nan"), ("timeout", float("inf")), ("timeout", "inf"), ("timeout", True),
        ("timeout", [1]), ("timeout", {"s": 1}), ("connect_timeout", "-inf"), ("max_retries", "nan"),
        ("max_retries", 2.5), ("max_retries", 10**6), ("retry_backoff", "1e400"), ("max_retry_after", False),
        ("max_retry_time", -1), ("timeout", 10**9), ("default_from_phone_number_id", True),
        ("default_from_phone_number_id", 1.5), ("default_from_phone_number_id", ["pn"]),
        ("dashboard_url", 5), ("dashboard_url", "javascript:alert(1)"), ("proxy", True),
    ],
)  # fmt: skip
def test_bad_extras_are_refused_naming_the_extra(
    conn: Callable[..., VantaxHook], name: str, value: Any
) -> None:
    with pytest.raises(VantaxConfigurationError, match=f"'{name}'"):
        _ = conn("https://api.vantaxai.com", extra={name: value}).settings


def test_a_numeric_sender_id_is_read_as_text(
    make_hook: Callable[..., VantaxHook], vantax_emulator: Emulator
) -> None:
    hook = make_hook(default_from_phone_number_id=5550123)
    hook.send_message("conv_num_sender", channel="sms", content="x")
    assert vantax_emulator.messages()[-1]["body"]["from_phone_number_id"] == "5550123"


@pytest.mark.parametrize("value", ["0", "-5", "nan", "inf", "Thu, 01 Jan 1970 00:00:00 GMT", "-0"])
def test_a_retry_after_that_would_drop_the_backoff_waits_the_backoff(value: str) -> None:
    policy = RetryPolicy(backoff_base=2.0)
    attempt = Attempts(SimpleNamespace(warning=lambda *a: None), policy, "POST", "/p", idempotent=True)
    error = VantaxRateLimitError("slow down", retry_after=parse_retry_after(value), status_code=429)
    assert attempt.wait_or_raise(error) >= 1.0  # half of the first backoff, the jitter's floor


def test_retry_after_values() -> None:
    assert parse_retry_after("nan") is None
    assert parse_retry_after("-3") is None
    assert parse_retry_after("inf") is None
    assert parse_retry_after("2.5") == 2.5
    assert parse_retry_after("Mon, 99 Foo 2026 99:99:99 GMT") is None


# -- issue 15 item 2: /v1 base URLs, the real URL in errors, the Test button -------------------


@pytest.mark.parametrize("suffix", ["/v1", "/v1/", "/V1//"])
def test_a_base_url_ending_in_v1_is_normalised(
    make_hook: Callable[..., VantaxHook], vantax_emulator: Emulator, suffix: str
) -> None:
    hook = make_hook(host=vantax_emulator.url + suffix)
    assert hook.settings.base_url == vantax_emulator.url
    assert hook.send_message("conv_v1", **IG).id  # type: ignore[arg-type]
    assert normalise_base_url("https://proxy.example.com/vantax/v1/") == "https://proxy.example.com/vantax"
    assert normalise_base_url("https://proxy.example.com/v10") == "https://proxy.example.com/v10"


def test_errors_show_the_real_url(make_hook: Callable[..., VantaxHook], vantax_emulator: Emulator) -> None:
    hook = make_hook(host=vantax_emulator.url + "/api")
    with pytest.raises(VantaxNotFoundError) as info:
        hook.send_message("conv_url", **IG)  # type: ignore[arg-type]
    assert f"{vantax_emulator.url}/api/v1/conversations/conv_url/messages" in str(info.value)


@pytest.mark.parametrize("suffix", ["/api", "/v1/v1", "/other"])
@pytest.mark.parametrize("key", [None, "vx_test_wrong"])
def test_the_test_button_does_not_accept_a_wrong_base_path(
    make_hook: Callable[..., VantaxHook], vantax_emulator: Emulator, suffix: str, key: str | None
) -> None:
    ok, text = make_hook(host=vantax_emulator.url + suffix, api_key=key).test_connection()
    assert not ok and "base URL" in text


def test_the_test_button_wants_the_error_envelope_on_404(
    canned: Canned, conn: Callable[..., VantaxHook]
) -> None:
    canned.answer(404, "<html>Not Found</html>", [("Content-Type", "text/html")])
    ok, text = conn(canned.url).test_connection()
    assert not ok and "does not look like the Vantax API" in text


def test_the_test_button_accepts_a_right_key_and_refuses_a_wrong_one(
    make_hook: Callable[..., VantaxHook], vantax_emulator: Emulator
) -> None:
    ok, text = make_hook().test_connection()
    assert ok is True and "the API key was accepted and a made-up key refused" in text
    assert [(r["method"], r["authorization_ok"], r["status"]) for r in vantax_emulator.requests()] == [
        ("GET", False, 401),  # no key
        ("GET", False, 401),  # a made-up key
        ("GET", True, 404),  # the key: "Message not found"
        ("GET", True, 404),  # a path that is no route: "Not found"
    ]
    assert vantax_emulator.requests()[3]["kind"] is None  # the emulator routed it nowhere
    ok, text = make_hook(api_key="vx_test_wrong").test_connection()
    assert not ok and "refused the API key" in text


# -- issue 15 item 8: connection URIs ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "base_url"),
    [
        ("vantax://:KEY@api.vantaxai.com/v1", "https://api.vantaxai.com"),
        ("vantax://:KEY@api.vantaxai.com", "https://api.vantaxai.com"),
        ("vantax://:KEY@127.0.0.1:8040", "http://127.0.0.1:8040"),
        ("vantax://:KEY@localhost:8040/v1", "http://localhost:8040"),
        ("vantax://:KEY@proxy.example.com/vantax", "https://proxy.example.com/vantax"),
        ("vantax://:KEY@proxy.example.com:8443/https", "https://proxy.example.com:8443"),
        ("vantax://:KEY@https%3A%2F%2Fapi.eu.example.com", "https://api.eu.example.com"),
        ("vantax://:KEY@", "https://api.vantaxai.com"),
    ],
)
def test_a_connection_uri_maps_to_the_base_url(
    monkeypatch: pytest.MonkeyPatch, uri: str, base_url: str
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_VANTAX_URI", uri)
    settings = VantaxHook("vantax_uri").settings
    assert (settings.base_url, settings.api_key) == (base_url, "KEY")


@pytest.mark.parametrize(
    "uri",
    [
        "vantax://:KEY@10.0.0.5:80/http",
        "vantax://:KEY@exa%20mple.com",
        "vantax://:KEY@x.example.com/http%20s",
    ],
)
def test_a_bad_connection_uri_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch, uri: str) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_VANTAX_URI", uri)
    with pytest.raises(VantaxConfigurationError):
        _ = VantaxHook("vantax_uri").settings


@pytest.mark.parametrize(
    "host", ["https://api.vantaxai.com:99999", "https://api.vantaxai.com:x", "https://a b.example.com",
             "https://\u2603\u2603..example.com", "api.vantaxai.com\n/v1"],
)  # fmt: skip
def test_a_bad_host_is_a_configuration_error(conn: Callable[..., VantaxHook], host: str) -> None:
    with pytest.raises(VantaxConfigurationError, match="base URL"):
        _ = conn(host).settings


# -- issue 15 item 9: the conversation link ------------------------------------------------------


@pytest.mark.parametrize(("conversation_id", "encoded"), [("..", "%2E%2E"), ("a/../b", "a%2F%2E%2E%2Fb")])
def test_the_conversation_link_encodes_dots(
    conn_extra: Callable[..., None], conversation_id: str, encoded: str
) -> None:
    from vantax_provider.operators.vantax import VantaxConversationLink, VantaxSendMessageOperator

    conn_extra(dashboard_url="https://app.vantaxai.com/c/{conversation_id}?tab=1")
    op = VantaxSendMessageOperator(
        task_id="t", conversation_id=conversation_id, channel="instagram", content="x"
    )
    link = VantaxConversationLink().get_link(op, ti_key=SimpleNamespace())  # type: ignore[arg-type]
    assert link == f"https://app.vantaxai.com/c/{encoded}?tab=1"


def test_the_bulk_result_holds_no_key_and_bounded_reasons(
    canned: Canned, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pasted key, and a server that echoes it in a huge 400: the bulk result XCom holds neither."""
    from tests.reliability._support import make_context
    from vantax_provider.hooks._scrub import secret_forms
    from vantax_provider.operators.vantax_bulk import VantaxBulkSendMessageOperator

    key = "vx_test_BULKCANARY0123456789"
    canned.answer(400, json.dumps({"success": False, "message": "x" * 100_000 + _echo(key)}))
    conn = {"conn_type": "vantax", "host": canned.url, "password": key + "\r\n", "extra": {"max_retries": 0}}
    monkeypatch.setenv("AIRFLOW_CONN_VANTAX_DEFAULT", json.dumps(conn))
    context = make_context("bulk")
    op = VantaxBulkSendMessageOperator(
        task_id="bulk",
        recipients=[{"cid": f"conv_{i}"} for i in range(5)],
        conversation_id="{{ recipient.cid }}",
        channel="instagram",
        content="hi",
    )
    try:
        output: Any = op.execute(context)
    except Exception as exc:
        output = _all_text(exc)
    text = json.dumps(output, default=str) + json.dumps(context["ti"].xcoms, default=str)
    assert canned.count() == 5  # every recipient was tried: the key was usable
    assert not any(form in text for form in secret_forms(key))
    assert len(text) < 5 * 2 * MAX_ERROR_TEXT + 5_000
