"""
API answers as generated input (hypothesis): any status code, any ``Retry-After`` form, bodies
that are not JSON, have wrong types, miss fields, or are huge, some echoing the API key in
every form it could take, served by a loopback server.  Whatever comes back, the hook returns a
``Message`` or raises a ``VantaxError`` subclass whose text is bounded and holds no form of the
key; a 2xx create answer with a usable string id is always returned as the created message.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.hooks._canned import Canned, canned_server
from tests.reliability._support import figures
from vantax_provider.exceptions import MAX_ERROR_TEXT, MAX_SERVER_TEXT, VantaxError
from vantax_provider.hooks._scrub import secret_forms
from vantax_provider.hooks.vantax import VantaxHook
from vantax_provider.models import Message, check_id

KEY = "vx_test_ANSWERCANARY+/=0123456789abcdef"
SUITE = "api-answers"
SETTINGS = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

_now = datetime.now(timezone.utc)
RETRY_AFTER = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "0",
            "-0",
            "-5",
            "1",
            "0.01",
            "0.5",
            "3600",
            "1e309",
            "nan",
            "NaN",
            "inf",
            "-inf",
            "",
            " ",
            "soon",
            "1_0",
            "0x10",
            "Thu, 01 Jan 1970 00:00:00 GMT",
            "Mon, 99 Foo 2026 99:99:99 GMT",
            format_datetime(_now - timedelta(hours=1), usegmt=True),
            format_datetime(_now + timedelta(seconds=1), usegmt=True),
            format_datetime(_now + timedelta(days=2), usegmt=True),
        ]
    ),
    st.integers(-(10**6), 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=30),
)
STATUS = st.one_of(
    st.sampled_from([200, 201]),
    st.sampled_from(
        [
            200,
            201,
            202,
            204,
            299,
            301,
            302,
            304,
            400,
            401,
            403,
            404,
            405,
            409,
            413,
            415,
            418,
            422,
            429,
            500,
            501,
            502,
            503,
            504,
            599,
        ]
    ),
    st.integers(200, 599),
)
ECHOES = [
    KEY,
    repr(KEY),
    repr(KEY.encode()),
    quote(KEY, safe=""),
    f"Bearer {KEY}",
    base64.b64encode(KEY.encode()).decode(),
    base64.b64encode(f"u:{KEY}".encode()).decode(),
    json.dumps(KEY),
]
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
TEXT = st.one_of(
    st.text(max_size=60),
    st.sampled_from(ECHOES),
    st.builds(lambda n, echo: "E" * n + echo, st.integers(0, 300_000), st.sampled_from(ECHOES)),
)
ID = st.one_of(st.text(max_size=20), st.just("msg_1"), st.integers(), st.none(), st.just("x" * 5000), JSONISH)
DATA = st.one_of(
    JSONISH,
    st.fixed_dictionaries(
        {"id": ID},
        optional={
            "status": st.one_of(
                st.sampled_from(["queued", "sent", "delivered", "failed", "read"]),
                JSONISH,
                st.just("s" * 10_000),
            ),
            "created_at": st.one_of(st.just("yesterday"), st.just("2026-01-14T10:30:12Z"), JSONISH),
            "media_url": JSONISH,
            "conversation_id": JSONISH,
            "channel": JSONISH,
            "content": TEXT,
            "subject": JSONISH,
        },
    ),
)
ENVELOPE = st.fixed_dictionaries(
    {},
    optional={
        "success": st.one_of(st.booleans(), JSONISH),
        "message": st.one_of(TEXT, JSONISH),
        "data": DATA,
    },
)
CREATED = st.fixed_dictionaries(
    {"id": st.one_of(st.just("msg_1"), st.text(min_size=1, max_size=20))},
    optional={
        "status": JSONISH,
        "created_at": st.one_of(st.just("yesterday"), JSONISH),
        "media_url": JSONISH,
        "conversation_id": JSONISH,
        "content": TEXT,
    },
)
BODY = st.one_of(
    CREATED.map(lambda data: json.dumps({"success": True, "message": "ok", "data": data})),
    ENVELOPE.map(json.dumps),
    st.just("<html><body>Bad Gateway</body></html>"),
    st.text(max_size=200),
    st.binary(max_size=200),
    st.builds(lambda n: "[" * n, st.integers(1, 5000)),  # deep nesting
    st.builds(
        lambda n, e: json.dumps({"success": False, "message": "x" * n + e}),
        st.integers(0, 300_000),
        st.sampled_from(ECHOES),
    ),
)
CONTENT_TYPE = st.sampled_from(
    ["application/json", "text/html", "text/plain", "application/problem+json", ""]
)


@pytest.fixture(scope="module")
def server() -> Iterator[Canned]:
    with canned_server() as canned:
        yield canned


@pytest.fixture(scope="module")
def hook(server: Canned) -> Iterator[VantaxHook]:
    import os

    conn = {
        "conn_type": "vantax",
        "host": server.url,
        "password": KEY,
        "extra": {"max_retries": 1, "retry_backoff": 0.001, "max_retry_after": 0.05, "timeout": 3},
    }
    os.environ["AIRFLOW_CONN_VANTAX_ANSWERS"] = json.dumps(conn)
    hook = VantaxHook("vantax_answers")
    yield hook
    hook.close()
    os.environ.pop("AIRFLOW_CONN_VANTAX_ANSWERS", None)


def _usable_created_id(status: int, body: bytes) -> str | None:
    """The id a 2xx create answer hands over, when it is one the hook must accept."""
    if not 200 <= status < 300:
        return None
    try:
        envelope = json.loads(body)
    except (ValueError, RecursionError):
        return None
    data = envelope.get("data") if isinstance(envelope, dict) and envelope.get("success") is True else None
    message_id = data.get("id") if isinstance(data, dict) else None
    if not isinstance(message_id, str):
        return None
    try:
        check_id(message_id)
    except ValueError:
        return None
    return message_id


def _texts(exc: BaseException) -> str:
    parts, seen, current = [], set(), exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts += [str(current), repr(current), repr(current.args)]
        current = current.__cause__ or current.__context__  # type: ignore[assignment]
    return "\n".join(parts)


def _call(hook: VantaxHook, method: str, mode: str) -> Message:
    if method == "GET":
        if mode == "async":
            return asyncio.run(_aget(hook))
        return hook.get_message("conv_gen", "msg_gen")
    key = "gen-key-1" if mode == "idempotent" else None
    if mode == "async":
        return asyncio.run(_asend(hook))
    return hook.send_message("conv_gen", channel="instagram", content="hi", idempotency_key=key)


async def _aget(hook: VantaxHook) -> Message:
    try:
        return await hook.aget_message("conv_gen", "msg_gen")
    finally:
        await hook.aclose()


async def _asend(hook: VantaxHook) -> Message:
    try:
        return await hook.asend_message("conv_gen", channel="instagram", content="hi")
    finally:
        await hook.aclose()


@SETTINGS
@given(
    status=STATUS,
    retry_after=RETRY_AFTER,
    body=BODY,
    content_type=CONTENT_TYPE,
    method=st.sampled_from(["POST", "GET"]),
    mode=st.sampled_from(["plain", "plain", "idempotent", "async"]),
)
def test_any_answer_gives_a_message_or_a_bounded_typed_error(
    server: Canned,
    hook: VantaxHook,
    caplog: pytest.LogCaptureFixture,
    status: int,
    retry_after: str | None,
    body: str | bytes,
    content_type: str,
    method: str,
    mode: str,
) -> None:
    headers = [("Content-Type", content_type)] if content_type else []
    if retry_after is not None:
        headers.append(("Retry-After", retry_after))
    server.answer(status, body, headers)
    f = figures(SUITE)
    f.cases += 1
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        try:
            result: Message | BaseException = _call(hook, method, mode)
        except VantaxError as exc:
            result = exc
        except Exception as exc:  # a raw library exception reached the caller
            f.extra["raw_exceptions"] = f.extra.get("raw_exceptions", 0) + 1
            raise AssertionError(f"raw {type(exc).__name__} for {status} {body!r:.200}") from exc
    raw = body if isinstance(body, bytes) else body.encode("utf-8", "surrogatepass")
    served = b"" if status in (204, 304) else raw  # the server sends no body with these
    created = _usable_created_id(status, served) if method == "POST" else None
    output = caplog.text
    if isinstance(result, Message):
        f.extra["messages"] = f.extra.get("messages", 0) + 1
        assert 200 <= status < 300
        if created is not None:
            assert result.id == created
    else:
        f.extra["typed_errors"] = f.extra.get("typed_errors", 0) + 1
        assert created is None, f"a created message ({created!r}) was lost: {result}"
        text = str(result)
        assert len(text) <= MAX_ERROR_TEXT
        assert result.api_message is None or len(result.api_message) <= MAX_SERVER_TEXT  # type: ignore[attr-defined]
        f.extra["longest_error"] = max(f.extra.get("longest_error", 0), len(text))
        output += _texts(result)
    for form in secret_forms(KEY):
        if form in output:
            f.leaks += 1
            raise AssertionError(f"a form of the key is in the output: {form!r}")
    f.survived += 1
