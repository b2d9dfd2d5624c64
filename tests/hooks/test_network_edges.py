"""
The hook's network edges, against hostile loopback servers (``tests/hooks/_hostile.py``): an
answer trickled byte by byte, servers that make the Test button believe a wrong base path or a
wrong key, IPv6 hosts in connection URIs, proxies (plain http, 407, a refused CONNECT) and a
2xx answer too large for a result.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.hooks._hostile import (
    Head,
    Hostile,
    Respond,
    created,
    envelope,
    fixed,
    hostile_server,
    keyed,
    response,
    send,
    trickle,
)
from vantax_provider.exceptions import (
    MAX_ERROR_TEXT,
    VantaxConfigurationError,
    VantaxProxyError,
    VantaxResponseError,
    VantaxServerError,
    VantaxTransportError,
)
from vantax_provider.hooks._scrub import secret_forms
from vantax_provider.hooks.vantax import VantaxHook
from vantax_provider.models import Message

KEY = "vx_test_NETEDGE0123456789abcdef"
PROXY_PASSWORD = "proxyPASSWORD0123456789"
IG = {"channel": "instagram", "content": "hi"}
#: The hook's read timeout in these tests; an attempt must end well before 3 times it.
TIMEOUT = 1.0


@pytest.fixture
def conn(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., VantaxHook]]:
    """A hook on a connection given as JSON fields (host, extras...), closed at the end."""
    hooks: list[VantaxHook] = []

    def make(host: str, **extra: Any) -> VantaxHook:
        conn_id = f"vantax_net_{len(hooks)}"
        fields = {"retry_backoff": 0.01, "timeout": TIMEOUT, "max_retries": 0, **extra}
        conn = {"conn_type": "vantax", "host": host, "password": KEY, "extra": fields}
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
        hook = VantaxHook(conn_id)
        hooks.append(hook)
        return hook

    yield make
    for hook in hooks:
        hook.close()


def _all_text(exc: BaseException) -> str:
    texts, seen = [], set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts += [str(current), repr(current), repr(current.args)]
        current = current.__cause__ or current.__context__
    return "\n".join(texts)


def _no_secret(exc: BaseException) -> None:
    text = _all_text(exc)
    assert len(str(exc)) <= MAX_ERROR_TEXT
    for secret in (KEY, PROXY_PASSWORD):
        assert not any(form in text for form in secret_forms(secret))


async def _aget(hook: VantaxHook) -> Message:
    try:
        return await hook.aget_message("conv_net", "msg_net")
    finally:
        await hook.aclose()


async def _asend(hook: VantaxHook) -> Message:
    try:
        return await hook.asend_message("conv_net", **IG)  # type: ignore[arg-type]
    finally:
        await hook.aclose()


def _call(hook: VantaxHook, call: str) -> Message:
    if call == "get":
        return hook.get_message("conv_net", "msg_net")
    if call == "send":
        return hook.send_message("conv_net", **IG)  # type: ignore[arg-type]
    if call == "aget":
        return asyncio.run(_aget(hook))
    return asyncio.run(_asend(hook))


# -- the read timeout is a deadline for the whole answer ------------------------------------------

#: A whole answer, its JSON padded with blanks: trickled at 0.1 s a byte it takes about 20 s.
_BODY = json.dumps({"success": True, "data": {"id": "msg_net", "status": "delivered"}}).encode() + b" " * 60
_ANSWER = response(200, _BODY, [("Content-Type", "application/json")])


def _trickled(what: str) -> Respond:
    head, _, body = _ANSWER.partition(b"\r\n\r\n")

    def respond(request: Head, sock: Any, server: Hostile) -> None:
        if what == "head":  # the status line and headers too
            trickle(sock, _ANSWER, 0.1, server)
        else:
            send(sock, head + b"\r\n\r\n")
            trickle(sock, body, 0.1, server)

    return respond


@pytest.mark.parametrize("what", ["head", "body"])
@pytest.mark.parametrize("call", ["get", "aget", "send", "asend"])
def test_a_trickled_answer_ends_the_attempt_at_the_timeout(
    conn: Callable[..., VantaxHook], what: str, call: str
) -> None:
    with hostile_server(_trickled(what)) as server:
        hook = conn(server.url)
        started = time.monotonic()
        with pytest.raises(VantaxTransportError, match="timed out") as info:
            _call(hook, call)
        elapsed = time.monotonic() - started
    assert elapsed < 3 * TIMEOUT, f"the attempt took {elapsed:.1f}s against timeout={TIMEOUT}"
    assert info.value.maybe_sent is True  # the server had the request: it may have acted on it
    assert server.count() == 1
    _no_secret(info.value)


def test_a_trickled_answer_is_retried_within_bounds(conn: Callable[..., VantaxHook]) -> None:
    """A read is repeated; each attempt ends at its deadline, so the task's time is bounded too."""
    with hostile_server(_trickled("body")) as server:
        hook = conn(server.url, max_retries=2)
        started = time.monotonic()
        with pytest.raises(VantaxTransportError, match="timed out"):
            hook.get_message("conv_net", "msg_net")
        elapsed = time.monotonic() - started
    assert server.count("GET") == 3
    assert elapsed < 3 * 3 * TIMEOUT


def test_an_answer_within_the_deadline_is_read(conn: Callable[..., VantaxHook]) -> None:
    """The deadline does not cut a slow-ish answer that completes in time (5 ms a byte)."""

    def respond(request: Head, sock: Any, server: Hostile) -> None:
        head, _, body = _ANSWER.partition(b"\r\n\r\n")
        send(sock, head + b"\r\n\r\n")
        trickle(sock, body, 0.005, server)

    with hostile_server(respond) as server:
        assert conn(server.url).get_message("conv_net", "msg_net").status == "delivered"
        assert asyncio.run(_aget(conn(server.url))).status == "delivered"


# -- the Test button: what a wrong route, a careless server or a 429 make of it --------------------


def _routes(prefix: str) -> Callable[[Head], bytes]:
    """With the key: the API's answers under ``prefix`` (a missing message), "Not found" elsewhere."""

    def with_key(head: Head) -> bytes:
        parts = head.path.removeprefix(prefix).split("/")
        if len(parts) == 6 and parts[:3] == ["", "v1", "conversations"] and parts[4] == "messages":
            return envelope(404, "Message not found")
        return envelope(404, "Not found")

    return with_key


def _header_present(head: Head, sock: Any, server: Hostile) -> None:
    """Checks only that an Authorization header is there, and knows no message."""
    if "authorization" not in head.headers:
        send(sock, envelope(401, "Missing API key"))
    else:
        send(sock, envelope(404, "Message not found"))


SERVERS: dict[str, tuple[Respond, str]] = {
    # A gateway that checks the key before routing; the API is at its root, the base says /api.
    "key-before-routing": (keyed(KEY, _routes("")), "/api"),
    "header-present": (_header_present, ""),
    # Checks the key, then says "message not found" to every path.
    "catch-all": (keyed(KEY, lambda head: envelope(404, "Message not found")), ""),
}


@pytest.mark.parametrize("name", list(SERVERS))
def test_the_test_button_does_not_call_a_careless_server_vantax(
    conn: Callable[..., VantaxHook], name: str
) -> None:
    respond, suffix = SERVERS[name]
    with hostile_server(respond) as server:
        ok, text = conn(server.url + suffix).test_connection()
    assert ok is False, text
    assert "not proven" in text or "made-up key" in text
    assert len(text) <= 500 and KEY not in text


def test_the_test_button_accepts_a_server_that_checks_the_key_before_routing(
    conn: Callable[..., VantaxHook],
) -> None:
    """The same gateway at the right base: a missing message and a wrong route are told apart."""
    with hostile_server(keyed(KEY, _routes(""))) as server:
        ok, text = conn(server.url).test_connection()
    assert ok is True, text
    assert "accepted" in text


def test_a_rate_limited_test_button_answers_at_once(conn: Callable[..., VantaxHook]) -> None:
    respond = keyed(KEY, lambda head: envelope(429, "Slow down", [("Retry-After", "30")]))
    with hostile_server(respond) as server:
        started = time.monotonic()
        ok, text = conn(server.url, max_retries=5).test_connection()
        elapsed = time.monotonic() - started
    assert ok is False and "429" in text, text
    assert elapsed < 10, f"the Test button took {elapsed:.1f}s"
    assert server.count() <= 4


def test_a_trickling_server_does_not_hold_the_test_button(conn: Callable[..., VantaxHook]) -> None:
    with hostile_server(_trickled("head")) as server:
        started = time.monotonic()
        ok, text = conn(server.url, timeout=30).test_connection()
        elapsed = time.monotonic() - started
    assert ok is False and "timed out" in text, text
    assert elapsed < 30, f"the Test button took {elapsed:.1f}s"


# -- IPv6 hosts and proxies ----------------------------------------------------------------------


def test_an_ipv6_host_in_a_connection_uri_works(monkeypatch: pytest.MonkeyPatch) -> None:
    """Airflow stores the host of ``vantax://:KEY@[::1]:P`` without its brackets."""
    with hostile_server(keyed(KEY, lambda head: created()), ipv6=True) as server:
        monkeypatch.setenv("AIRFLOW_CONN_VANTAX_V6", f"vantax://:{KEY}@[::1]:{server.port}?timeout=5")
        hook = VantaxHook("vantax_v6")
        try:
            assert hook.settings.base_url == f"http://[::1]:{server.port}"
            assert hook.send_message("conv_v6", **IG).id == "msg_hostile"  # type: ignore[arg-type]
        finally:
            hook.close()
    assert [h.path for h in server.received] == ["/v1/conversations/conv_v6/messages"]


@pytest.mark.parametrize(
    ("uri", "base_url"),
    [
        ("vantax://:KEY@[2001:db8::1]:8443", "https://[2001:db8::1]:8443"),
        ("vantax://:KEY@[2001:db8::1]/vantax", "https://[2001:db8::1]/vantax"),
        ("vantax://:KEY@[::1]", "http://[::1]"),
    ],
)
def test_ipv6_connection_uris_map_to_the_base_url(
    monkeypatch: pytest.MonkeyPatch, uri: str, base_url: str
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_VANTAX_V6", uri)
    assert VantaxHook("vantax_v6").settings.base_url == base_url


@pytest.mark.parametrize("proxy_scheme", ["http", "socks5"])
def test_a_proxy_with_a_plain_http_base_url_is_refused_before_any_request(
    conn: Callable[..., VantaxHook], proxy_scheme: str
) -> None:
    """The proxy would read the bearer key in clear: refused, naming the extras and the way out."""
    with hostile_server(fixed(created())) as proxy, hostile_server(fixed(created())) as target:
        hook = conn(target.url, proxy=f"{proxy_scheme}://127.0.0.1:{proxy.port}")
        with pytest.raises(VantaxConfigurationError) as info:
            hook.send_message("conv_clear", **IG)  # type: ignore[arg-type]
        ok, text = hook.test_connection()
    assert "'proxy'" in str(info.value) and "allow_plain_http_proxy" in str(info.value)
    assert not ok and "allow_plain_http_proxy" in text
    assert proxy.count() == 0 and target.count() == 0
    _no_secret(info.value)


def test_the_plain_http_proxy_opt_in_is_for_loopback_proxies_only(conn: Callable[..., VantaxHook]) -> None:
    hook = conn("http://127.0.0.1:9", proxy="http://proxy.example.com:3128", allow_plain_http_proxy=True)
    with pytest.raises(VantaxConfigurationError, match="loopback"):
        _ = hook.settings
    with pytest.raises(VantaxConfigurationError, match="'allow_plain_http_proxy'"):
        _ = conn("http://127.0.0.1:9", proxy="http://127.0.0.1:3128", allow_plain_http_proxy="maybe").settings
    https = conn("https://api.vantaxai.com", proxy="http://proxy.example.com:3128").settings
    assert https.proxy == "http://proxy.example.com:3128"


def test_a_loopback_proxy_with_the_opt_in_carries_the_request(conn: Callable[..., VantaxHook]) -> None:
    with hostile_server(fixed(created("msg_via_proxy"))) as proxy:
        hook = conn(
            "http://127.0.0.1:9", proxy=f"http://127.0.0.1:{proxy.port}", allow_plain_http_proxy="true"
        )
        assert hook.send_message("conv_proxy", **IG).id == "msg_via_proxy"  # type: ignore[arg-type]
    assert proxy.received[0].target == "http://127.0.0.1:9/v1/conversations/conv_proxy/messages"


@pytest.mark.parametrize("call", ["get", "send", "aget", "asend"])
def test_a_proxy_407_is_a_proxy_error_not_a_vantax_refusal(
    conn: Callable[..., VantaxHook], call: str
) -> None:
    answer = response(
        407, "auth", [("Proxy-Authenticate", 'Basic realm="corp"')], "Proxy Authentication Required"
    )
    with hostile_server(fixed(answer)) as proxy:
        proxy_url = f"http://user:{PROXY_PASSWORD}@127.0.0.1:{proxy.port}"
        hook = conn("http://127.0.0.1:9", proxy=proxy_url, allow_plain_http_proxy=True)
        with pytest.raises(VantaxProxyError) as info:
            _call(hook, call)
    assert info.value.maybe_sent is False and info.value.status_code == 407
    assert "proxy" in str(info.value).lower() and "Vantax refused" not in str(info.value)
    _no_secret(info.value)


@pytest.mark.parametrize("status", [403, 407, 502])
@pytest.mark.parametrize("call", ["send", "asend"])
def test_a_proxy_that_refuses_connect_sent_nothing(
    conn: Callable[..., VantaxHook], status: int, call: str
) -> None:
    """A POST without an idempotency key may be repeated: nothing reached Vantax."""
    with hostile_server(fixed(response(status, "no", reason="Refused"))) as proxy:
        proxy_url = f"http://user:{PROXY_PASSWORD}@127.0.0.1:{proxy.port}"
        hook = conn("https://vantax.invalid", proxy=proxy_url, max_retries=1)
        with pytest.raises(VantaxProxyError) as info:
            _call(hook, call)
    assert info.value.maybe_sent is False and info.value.status_code == status
    assert [h.method for h in proxy.received] == ["CONNECT", "CONNECT"]  # repeated: it was safe
    assert proxy.received[0].target == "vantax.invalid:443"
    assert "proxy" in str(info.value).lower()
    _no_secret(info.value)


# -- what an answer may put into a result --------------------------------------------------------


def _huge(size: int, status: int = 200) -> bytes:
    data = {"id": "msg_big", "status": "delivered", "content": "C" * size}
    return response(
        status, json.dumps({"success": True, "data": data}), [("Content-Type", "application/json")]
    )


@pytest.mark.parametrize("call", ["get", "aget", "send", "asend"])
def test_a_2xx_answer_of_10_mb_is_refused_unread(conn: Callable[..., VantaxHook], call: str) -> None:
    with hostile_server(fixed(_huge(10_000_000))) as server:
        with pytest.raises(VantaxResponseError, match="larger than") as info:
            _call(hook := conn(server.url, max_retries=1), call)
        del hook
    assert info.value.status_code == 200
    # A read is repeated; a send without an idempotency key may have created the message: not.
    assert server.count() == (2 if call.endswith("get") else 1)
    _no_secret(info.value)


def test_a_large_error_answer_keeps_its_status(conn: Callable[..., VantaxHook]) -> None:
    page = response(503, "<html>" + "x" * 5_000_000 + "</html>", [("Content-Type", "text/html")])
    with hostile_server(fixed(page)) as server, pytest.raises(VantaxServerError) as info:
        conn(server.url).get_message("conv_net", "msg_net")
    assert info.value.status_code == 503
    _no_secret(info.value)


@pytest.mark.parametrize("call", ["get", "aget", "send", "asend"])
def test_a_long_content_is_cut_in_the_result(conn: Callable[..., VantaxHook], call: str) -> None:
    with hostile_server(fixed(_huge(500_000))) as server:
        message = _call(conn(server.url), call)
    assert message.id == "msg_big" and message.status == "delivered"
    assert message.content is not None and message.content.endswith("more characters]")
    assert len(json.dumps(message.model_dump(mode="json"))) < 20_000


def test_the_send_operators_xcom_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.reliability._support import make_context
    from vantax_provider.operators.vantax import VantaxSendMessageOperator

    long_fields = {
        "subject": "S" * 100_000,
        "channel": "x" * 100_000,
        "media_url": ["https://a/" + "m" * 100] * 1_000,
    }
    answer = created("msg_big", content="C" * 500_000, **long_fields)
    with hostile_server(fixed(answer)) as server:
        conn = {"conn_type": "vantax", "host": server.url, "password": KEY, "extra": {"max_retries": 0}}
        monkeypatch.setenv("AIRFLOW_CONN_VANTAX_DEFAULT", json.dumps(conn))
        op = VantaxSendMessageOperator(task_id="send", conversation_id="conv_big", **IG)  # type: ignore[arg-type]
        output = op.execute(make_context("send"))
    assert output["id"] == "msg_big"
    assert len(json.dumps(output)) < 100_000


def test_a_socks_proxy_without_its_package_is_a_configuration_error(conn: Callable[..., VantaxHook]) -> None:
    from importlib.util import find_spec

    if find_spec("socksio") is not None:
        pytest.skip("httpx[socks] is installed here")
    hook = conn("https://api.vantaxai.com", proxy="socks5://127.0.0.1:1080")
    with pytest.raises(VantaxConfigurationError, match=r"httpx\[socks\]"):
        hook.get_message("conv_net", "msg_net")
    ok, text = hook.test_connection()
    assert not ok and "httpx[socks]" in text
