"""
Connection settings as generated input (hypothesis): passwords, hosts, schemas, ports and extras
with white space, control and Unicode characters, ``nan``/``inf``, negative and huge numbers,
booleans, lists and objects.  Reading them gives valid settings or one clear
``VantaxConfigurationError``, never a raw exception; and the key never appears in any output,
the Test button's answer included (tested against a loopback server that echoes the key).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.hooks._canned import Canned, canned_server
from tests.reliability._support import figures
from vantax_provider.exceptions import MAX_ERROR_TEXT, VantaxConfigurationError
from vantax_provider.hooks._scrub import secret_forms
from vantax_provider.hooks._settings import settings_from_connection
from vantax_provider.hooks.vantax import VantaxHook

SUITE = "connection-settings"
CANARY = "vx_test_SETTINGSCANARY42"
SETTINGS = settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
NAMES = ["timeout", "connect_timeout", "max_retries", "retry_backoff", "max_retry_after", "max_retry_time"]
ODD_CHARS = st.sampled_from(
    [
        " ",
        "\t",
        "\n",
        "\r",
        "\x00",
        "\x0b",
        "\x7f",
        "\u00a0",
        "\u2028",
        "\u2029",
        "\u200b",
        "\ufeff",
        "\u00e9",
        "\u2603",
        "\U0001f600",
        "'",
        '"',
        "\\",
        "%",
        "@",
        "/",
        ":",
        "#",
        "?",
    ]
)
WHITE = st.text(st.sampled_from([" ", "\t", "\n", "\r", "\u00a0", "\u3000"]), max_size=3)
PASSWORD = st.builds(
    lambda pre, middle, post: f"{pre}{CANARY}{middle}{post}",
    WHITE,
    st.one_of(st.just(""), st.text(ODD_CHARS, max_size=3), st.text(max_size=5)),
    WHITE,
)
NUMBER = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["nan", "inf", "-inf", "NaN", "1e400", "-1", "0", "30", " 5 ", "", "2.5", "1_0", "true"]),
    st.text(max_size=6),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=1),
)
TEXTISH = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=20),
    st.text(ODD_CHARS, max_size=4).map(lambda t: f"pn_{t}"),
    st.lists(st.text(max_size=3), max_size=2),
)
URLISH = st.one_of(
    TEXTISH,
    st.sampled_from(
        [
            "https://app.example.com/c/{conversation_id}",
            "javascript:alert(1)",
            "http://",
            "ftp://x.example.com",
            "http://proxy.internal:3128",
            "socks5://127.0.0.1:1080",
            "http://u:p@proxy.internal:1",
            "https://x:99999",
        ]
    ),
)
HOST = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "",
            "api.vantaxai.com",
            "https://api.vantaxai.com/v1/",
            "http://127.0.0.1:8040",
            "127.0.0.1",
            "http://10.0.0.5",
            "https://u:p@x.example.com",
            "https://x.example.com?q=1",
            "https://x.example.com:0",
            "https://x.example.com:99999",
            "https://[::1",
            "http://[::1]:80",
            "https://xn--.example.com",
            "https://\u2603.example.com",
            "ftp://x.example.com",
            "https://",
            "://x",
            "localhost:8040/v1",
        ]
    ),
    st.builds(
        lambda a, b: f"https://api{a}.example.com{b}",
        st.text(ODD_CHARS, max_size=2),
        st.text(ODD_CHARS, max_size=2),
    ),
    st.text(max_size=25),
)
SCHEMA = st.one_of(
    st.none(),
    st.sampled_from(["", "http", "https", "v1", "/v1/", "HTTPS", "api/v1", "ftp"]),
    st.text(max_size=6),
)
PORT = st.one_of(st.none(), st.integers(-5, 70_000))
EXTRA = st.fixed_dictionaries(
    {},
    optional={
        **{name: NUMBER for name in NAMES},
        "default_from_phone_number_id": TEXTISH,
        "dashboard_url": URLISH,
        "proxy": URLISH,
        "unknown_extra": TEXTISH,
    },
)


def _connection(password: str, host: Any, schema: Any, port: Any, extra: dict[str, Any]) -> Any:
    from airflow.sdk import Connection

    return Connection(
        conn_id="vantax_generated",
        conn_type="vantax",
        host=host,
        password=password,
        schema=schema,
        port=port,
        extra=json.dumps(extra),
    )


def _leaked(text: str, password: str) -> bool:
    secrets = {CANARY, password, password.strip()}
    return any(form in text for secret in secrets if secret for form in secret_forms(secret))


@pytest.fixture(scope="module")
def echo_server() -> Iterator[Canned]:
    """Answers every request with a 401 whose text echoes the canary key in several forms."""
    with canned_server() as canned:
        yield canned


@SETTINGS
@given(password=PASSWORD, host=HOST, schema=SCHEMA, port=PORT, extra=EXTRA)
def test_any_connection_reads_as_settings_or_one_clear_error(
    caplog: pytest.LogCaptureFixture, password: str, host: Any, schema: Any, port: Any, extra: dict[str, Any]
) -> None:
    f = figures(SUITE)
    f.cases += 1
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        try:
            result: Any = settings_from_connection(_connection(password, host, schema, port, extra))
        except VantaxConfigurationError as exc:
            result = exc
        except Exception as exc:
            f.extra["raw_exceptions"] = f.extra.get("raw_exceptions", 0) + 1
            raise AssertionError(f"raw {type(exc).__name__}") from exc
    if isinstance(result, VantaxConfigurationError):
        f.extra["refused"] = f.extra.get("refused", 0) + 1
        text = f"{result} {result!r} {result.__cause__!r} {result.__context__!r}"
        assert len(str(result)) <= MAX_ERROR_TEXT
        assert result.__cause__ is None
    else:
        f.extra["accepted"] = f.extra.get("accepted", 0) + 1
        text = repr(result)
        assert result.api_key == password.strip()
        assert result.base_url.startswith(("http://", "https://"))
        assert not result.base_url.rstrip("/").lower().endswith("/v1")
    if _leaked(text + caplog.text, password):
        f.leaks += 1
        raise AssertionError("the key is in the output")
    f.survived += 1


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(password=PASSWORD, extra=EXTRA, echo=st.sampled_from(["plain", "repr", "quoted", "huge"]))
def test_the_test_button_never_shows_the_key(
    echo_server: Canned, caplog: pytest.LogCaptureFixture, password: str, extra: dict[str, Any], echo: str
) -> None:
    from urllib.parse import quote

    key = password.strip()
    said = {
        "plain": f"Invalid key {key}",
        "repr": repr(key),
        "quoted": quote(key, safe=""),
        "huge": "x" * 50_000 + key,
    }
    echo_server.answer(401, json.dumps({"success": False, "message": said[echo]}))
    hook = VantaxHook("vantax_generated")
    conn = _connection(password, echo_server.url, None, None, {**extra, "proxy": None})
    hook.get_connection = lambda conn_id: conn  # type: ignore[method-assign]
    f = figures(SUITE)
    f.cases += 1
    f.extra["test_button"] = f.extra.get("test_button", 0) + 1
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        ok, answer = hook.test_connection()
    assert ok is False and answer and len(answer) <= 500
    if _leaked(answer + caplog.text, password):
        f.leaks += 1
        raise AssertionError("the key is in the Test button's answer or the logs")
    f.survived += 1
