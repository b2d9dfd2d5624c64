"""The retry table, enforced by counting what the emulator received and created."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from vantax_provider.emulator.testing import Emulator
from vantax_provider.exceptions import (
    VantaxAuthenticationError,
    VantaxConflictError,
    VantaxError,
    VantaxInvalidRequestError,
    VantaxMessagingWindowError,
    VantaxNotFoundError,
    VantaxRateLimitError,
    VantaxResponseError,
    VantaxServerError,
    VantaxTransportError,
)
from vantax_provider.hooks.vantax import VantaxHook

KEY = "test-idem-key-1"
SMS = {"channel": "sms", "content": "hello", "from_phone_number_id": "pn_1"}


def send(hook: VantaxHook, key: str | None = None, conversation_id: str = "conv_1") -> str:
    return hook.send_message(conversation_id, **SMS, idempotency_key=key).id  # type: ignore[arg-type]


def posts(emu: Emulator, expected: int | None = None, kind: str = "create") -> int:
    """Requests the emulator logged; a stalled one is logged when its answer ends, so wait for it."""
    import time

    deadline = time.monotonic() + 3
    while True:
        seen = int(emu.stats()["by_path_kind"].get(kind, 0))
        if expected is None or seen >= expected or time.monotonic() > deadline:
            return seen
        time.sleep(0.05)


# (fault rule, idempotency key sent, expected error or None for success, messages created, POSTs seen)
POST_CASES = [
    pytest.param({"kind": "status", "status": 429, "retry_after": "0"}, None, None, 1, 2, id="429-retried"),
    pytest.param({"kind": "status", "status": 503}, None, None, 1, 2, id="503-retried"),
    pytest.param(
        {"kind": "status", "status": 500}, None, VantaxServerError, 0, 1, id="500-no-key-not-retried"
    ),
    pytest.param(
        {"kind": "status", "status": 502}, None, VantaxServerError, 0, 1, id="502-no-key-not-retried"
    ),
    pytest.param(
        {"kind": "status", "status": 504, "when": "after"},
        None,
        VantaxServerError,
        1,
        1,
        id="504-after-create-no-key-surfaces",
    ),
    pytest.param(
        {"kind": "status", "status": 500, "when": "after"}, KEY, None, 1, 2, id="500-after-key-replayed"
    ),
    pytest.param(
        {"kind": "status", "status": 502, "when": "after"}, KEY, None, 1, 2, id="502-after-key-replayed"
    ),
    pytest.param(
        {"kind": "status", "status": 504, "when": "after"}, KEY, None, 1, 2, id="504-after-key-replayed"
    ),
    pytest.param({"kind": "drop", "when": "after"}, None, VantaxTransportError, 1, 1, id="drop-no-key"),
    pytest.param({"kind": "drop", "when": "after"}, KEY, None, 1, 2, id="drop-after-key"),
    pytest.param({"kind": "drop", "when": "before"}, KEY, None, 1, 2, id="drop-before-key"),
    pytest.param(
        {"kind": "stall", "when": "after", "stall_seconds": 1.5},
        None,
        VantaxTransportError,
        1,
        1,
        id="read-timeout-no-key",
    ),
    pytest.param(
        {"kind": "stall", "when": "after", "stall_seconds": 1.5}, KEY, None, 1, 2, id="read-timeout-key"
    ),
    pytest.param(
        {"kind": "malformed", "when": "after", "status": 200},
        None,
        VantaxResponseError,
        1,
        1,
        id="2xx-not-json-no-key",
    ),
    pytest.param(
        {"kind": "malformed", "when": "after", "status": 200}, KEY, None, 1, 2, id="2xx-not-json-key"
    ),
    pytest.param({"kind": "malformed", "status": 503}, None, None, 1, 2, id="503-html-retried"),
]


@pytest.mark.parametrize(("rule", "key", "error", "created", "requests"), POST_CASES)
def test_post_retry_table(
    make_hook: Callable[..., VantaxHook],
    vantax_emulator: Emulator,
    rule: dict[str, object],
    key: str | None,
    error: type[VantaxError] | None,
    created: int,
    requests: int,
) -> None:
    hook = make_hook(timeout=0.5)
    vantax_emulator.inject(**rule, method="POST")  # type: ignore[arg-type]
    if error is None:
        message_id = send(hook, key)
        assert [m["id"] for m in vantax_emulator.messages()] == [message_id]
    else:
        with pytest.raises(error):
            send(hook, key)
    assert posts(vantax_emulator, requests) == requests
    assert vantax_emulator.stats()["created"] == created


NEVER_RETRIED = [
    (400, VantaxInvalidRequestError),
    (401, VantaxAuthenticationError),
    (403, VantaxAuthenticationError),
    (404, VantaxNotFoundError),
    (409, VantaxConflictError),
    (413, VantaxInvalidRequestError),
    (415, VantaxInvalidRequestError),
    (422, VantaxMessagingWindowError),
]


@pytest.mark.parametrize(("status", "error"), NEVER_RETRIED)
@pytest.mark.parametrize("key", [None, KEY])
def test_never_retried_statuses(
    make_hook: Callable[..., VantaxHook],
    vantax_emulator: Emulator,
    status: int,
    error: type[VantaxError],
    key: str | None,
) -> None:
    vantax_emulator.inject("status", status=status, method="POST")
    with pytest.raises(error) as info:
        send(make_hook(), key)
    assert info.value.status_code == status
    assert info.value.path == "/v1/conversations/conv_1/messages"
    assert posts(vantax_emulator) == 1
    assert vantax_emulator.stats()["created"] == 0


@pytest.mark.parametrize(
    "rule",
    [
        {"kind": "status", "status": 500},
        {"kind": "status", "status": 502},
        {"kind": "status", "status": 503},
        {"kind": "status", "status": 504},
        {"kind": "status", "status": 429, "retry_after": "0"},
        {"kind": "drop"},
        {"kind": "stall", "stall_seconds": 1.5},
        {"kind": "malformed", "status": 200},
    ],
    ids=lambda r: f"{r['kind']}-{r.get('status', '')}",
)
def test_get_retries_transient_failures(
    make_hook: Callable[..., VantaxHook], vantax_emulator: Emulator, rule: dict[str, object]
) -> None:
    hook = make_hook(timeout=0.5)
    message_id = send(hook)
    vantax_emulator.inject(**rule, method="GET", times=2)  # type: ignore[arg-type]
    assert hook.get_message("conv_1", message_id).id == message_id
    assert posts(vantax_emulator, 3, kind="get") == 3


def test_get_not_found_is_not_retried(
    make_hook: Callable[..., VantaxHook], vantax_emulator: Emulator
) -> None:
    with pytest.raises(VantaxNotFoundError):
        make_hook().get_message("conv_1", "msg_missing")
    assert vantax_emulator.stats()["by_path_kind"]["get"] == 1


def test_retries_are_bounded_in_count(
    make_hook: Callable[..., VantaxHook], vantax_emulator: Emulator
) -> None:
    vantax_emulator.inject("status", status=503, times=None)
    with pytest.raises(VantaxServerError):
        send(make_hook(max_retries=3))
    assert posts(vantax_emulator) == 4
    assert vantax_emulator.stats()["created"] == 0


def test_retries_are_bounded_in_time(make_hook: Callable[..., VantaxHook], vantax_emulator: Emulator) -> None:
    vantax_emulator.inject("status", status=503, times=None)
    with pytest.raises(VantaxServerError):
        send(make_hook(max_retries=50, retry_backoff=0.2, max_retry_time=0.5))
    # Waits of 0.1-0.2 s, then 0.2-0.4 s (equal jitter): a third attempt may start before 0.5 s,
    # a fourth cannot (it would start after at least 0.7 s).
    assert posts(vantax_emulator) in (2, 3)


def test_connection_refused_is_retried_then_raised(
    make_hook: Callable[..., VantaxHook], monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    from vantax_provider.hooks._wire import Attempts

    waits: list[float] = []
    decide = Attempts.wait_or_raise

    def counting(self: Attempts, error: VantaxError) -> float:
        wait = decide(self, error)  # raises when the policy says stop
        waits.append(wait)
        return wait

    monkeypatch.setattr(Attempts, "wait_or_raise", counting)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    hook = make_hook(host=f"http://127.0.0.1:{port}", max_retries=2)
    with pytest.raises(VantaxTransportError, match="ConnectError") as info:
        send(hook)  # no key: retried all the same, the message cannot have been created
    assert info.value.maybe_sent is False
    assert len(waits) == 2


def test_retry_after_seconds_is_honoured(
    make_hook: Callable[..., VantaxHook], vantax_emulator: Emulator
) -> None:
    vantax_emulator.inject("status", status=429, retry_after="1")
    send(make_hook())
    first, second = (r["t"] for r in vantax_emulator.requests() if r["kind"] == "create")
    assert second - first >= 1.0


def test_retry_after_http_date_is_honoured(
    make_hook: Callable[..., VantaxHook], vantax_emulator: Emulator
) -> None:
    from datetime import datetime, timedelta, timezone
    from email.utils import format_datetime

    when = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=2), usegmt=True)
    vantax_emulator.inject("status", status=429, retry_after=when)
    send(make_hook())
    first, second = (r["t"] for r in vantax_emulator.requests() if r["kind"] == "create")
    assert second - first >= 0.9  # HTTP dates have whole-second resolution


def test_retry_after_beyond_the_cap_raises_at_once(
    make_hook: Callable[..., VantaxHook], vantax_emulator: Emulator
) -> None:
    vantax_emulator.inject("status", status=429, retry_after="120")
    with pytest.raises(VantaxRateLimitError) as info:
        send(make_hook(max_retry_after=10))
    assert info.value.retry_after == 120
    assert "Retry after 120s" in str(info.value)
    assert posts(vantax_emulator) == 1
