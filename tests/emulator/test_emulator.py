"""Tests of the Vantax emulator, driven with plain httpx; every check counts what the server received."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from vantax_provider.emulator.testing import Emulator, EmulatorError, running_emulator

# The emulator imports nothing from Airflow: once, in the pinned environment, is enough.
pytestmark = pytest.mark.single_env

SMS = {"channel": "sms", "content": "Hello", "from_phone_number_id": "pn_1"}
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@pytest.fixture
def emu(vantax_emulator: Emulator) -> Emulator:
    """The session emulator from the plugin (tests/conftest.py), reset for this test."""
    return vantax_emulator


def auth(emu: Emulator) -> dict[str, str]:
    return {"Authorization": f"Bearer {emu.api_key}"}


@pytest.fixture
def client(emu: Emulator) -> Any:
    with httpx.Client(base_url=emu.url, headers=auth(emu), timeout=5.0) as c:
        yield c


def create_path(conversation_id: str = "conv_1") -> str:
    return f"/v1/conversations/{encode(conversation_id)}/messages"


def encode(segment: str) -> str:
    """Percent-encode everything but unreserved letters, so even '.' can't be normalised away."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "_-~") else _pct(c) for c in segment)


def _pct(char: str) -> str:
    return "".join(f"%{b:02X}" for b in char.encode("utf-8"))


def send(
    client: httpx.Client, body: Any = None, conversation_id: str = "conv_1", **kw: Any
) -> httpx.Response:
    return client.post(create_path(conversation_id), json=SMS if body is None else body, **kw)


# -- basics -----------------------------------------------------------------------------------


def test_health_and_airflow_connection(emu: Emulator) -> None:
    assert emu.health()["ok"] is True
    assert emu.url.startswith("http://127.0.0.1:")
    conn = json.loads(emu.connection_json())
    assert conn == {"conn_type": "vantax", "host": emu.url, "password": emu.api_key}
    assert emu.airflow_env() == {"AIRFLOW_CONN_VANTAX_DEFAULT": emu.connection_json()}
    assert list(emu.airflow_env("my_vx")) == ["AIRFLOW_CONN_MY_VX"]


def test_create_returns_the_documented_envelope(emu: Emulator, client: httpx.Client) -> None:
    body = {**SMS, "media_url": ["https://cdn.example.com/a.jpg"]}
    r = send(client, body, headers={"Idempotency-Key": "k-1"})
    assert r.status_code == 201
    assert r.headers["content-type"] == "application/json"
    env = r.json()
    assert env["success"] is True and env["message"] == "Message sent successfully"
    data = env["data"]
    assert re.fullmatch(r"msg_[0-9a-f]+", data["id"])
    assert ISO_Z.match(data["created_at"])
    assert {k: v for k, v in data.items() if k not in ("id", "created_at")} == {
        "conversation_id": "conv_1",
        "channel": "sms",
        "direction": "outbound",
        "content": "Hello",
        "subject": None,
        "sender_type": "api",
        "media_url": ["https://cdn.example.com/a.jpg"],
        "status": "queued",
    }
    [stored] = emu.messages()
    assert stored["id"] == data["id"] and stored["body"] == body and stored["idempotency_key"] == "k-1"
    assert stored["created_at"] == data["created_at"] and isinstance(stored["created_monotonic"], float)
    stats = emu.stats()
    assert stats["created"] == 1 and stats["by_path_kind"]["create"] == 1 and stats["responses"] == {"201": 1}


def test_email_keeps_subject_and_drops_media(emu: Emulator, client: httpx.Client) -> None:
    body = {
        "channel": "email",
        "content": "x",
        "subject": "Hi",
        "html": "<p>x</p>",
        "media_url": ["http://a.b/c"],
    }
    data = send(client, body).json()["data"]
    assert data["subject"] == "Hi" and data["media_url"] == []
    assert emu.messages()[0]["ignored_fields"] == ["media_url"]
    sms = send(client, {**SMS, "subject": "ignored"}).json()["data"]
    assert sms["subject"] is None


def test_get_returns_current_message_and_404s(emu: Emulator, client: httpx.Client) -> None:
    data = send(client).json()["data"]
    r = client.get(f"{create_path()}/{data['id']}")
    assert r.status_code == 200 and r.json()["success"] is True
    assert r.json()["data"]["id"] == data["id"]
    assert client.get(f"{create_path('conv_other')}/{data['id']}").status_code == 404
    missing = client.get(f"{create_path()}/msg_nope")
    assert missing.status_code == 404 and missing.json() == {"success": False, "message": "Message not found"}
    assert emu.stats()["by_path_kind"] == {"create": 1, "get": 3, "other": 0}


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v1/conversations/conv_1/messages", 405),
        ("PUT", "/v1/conversations/conv_1/messages", 405),
        ("POST", "/v1/conversations/conv_1/messages/msg_1", 405),
        ("DELETE", "/v1/conversations/conv_1/messages/msg_1", 405),
        ("GET", "/v1/conversations//messages", 404),
        ("GET", "/v1/conversations/conv_1", 404),
        ("POST", "/v2/conversations/conv_1/messages", 404),
        ("GET", "/", 404),
    ],
)
def test_routing_errors(emu: Emulator, client: httpx.Client, method: str, path: str, status: int) -> None:
    r = client.request(method, path)
    assert r.status_code == status
    assert r.json()["success"] is False and r.json()["message"]
    assert emu.stats()["requests"] == 1 and emu.stats()["created"] == 0


# -- auth and transport-level checks ----------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "Missing API key"),
        ({"Authorization": "Bearer vx_test_wrong_key"}, "Invalid API key"),
        ({"Authorization": "Basic {key}"}, "Invalid API key"),
        ({"Authorization": "{key}"}, "Invalid API key"),
    ],
)
def test_auth_failures(emu: Emulator, headers: dict[str, str], message: str) -> None:
    headers = {name: value.format(key=emu.api_key) for name, value in headers.items()}
    with httpx.Client(base_url=emu.url, headers=headers) as anonymous:
        r = anonymous.post(create_path(), json=SMS)
        assert anonymous.get(f"{create_path()}/msg_1").status_code == 401
    assert r.status_code == 401 and r.json() == {"success": False, "message": message}
    assert emu.stats()["created"] == 0
    assert [e["authorization_ok"] for e in emu.requests()] == [False, False]


def test_request_log_never_holds_the_key(emu: Emulator, client: httpx.Client) -> None:
    send(client, headers={"Idempotency-Key": "k"})
    client.post(create_path(), json=SMS, headers={"Authorization": "Bearer vx_test_wrong_key"})
    log = emu.requests()
    dumped = json.dumps(log) + json.dumps(emu.messages()) + json.dumps(emu.stats())
    assert emu.api_key not in dumped and "vx_test_wrong_key" not in dumped and "Bearer" not in dumped
    assert [e["authorization_ok"] for e in log] == [True, False]
    first = log[0]
    assert first["method"] == "POST" and first["path"] == "/v1/conversations/conv_1/messages"
    assert first["status"] == 201 and first["idempotency_key"] == "k" and first["fault"] is None
    assert first["had_nulls"] is False and isinstance(first["t"], float) and log[1]["t"] >= first["t"]


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_wrong_content_type_is_415(emu: Emulator, client: httpx.Client, content_type: str | None) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    r = client.post(create_path(), content=json.dumps(SMS).encode(), headers=headers)
    assert r.status_code == 415 and r.json()["success"] is False
    ok = client.post(
        create_path(), content=json.dumps(SMS), headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert ok.status_code == 201
    assert emu.stats()["created"] == 1


@pytest.mark.parametrize("chunked", [False, True])
def test_body_over_one_mib_is_413(emu: Emulator, client: httpx.Client, chunked: bool) -> None:
    big = json.dumps({**SMS, "html": "x" * (1024 * 1024)}).encode()
    content: Any = iter([big[:1000], big[1000:]]) if chunked else big
    r = client.post(create_path(), content=content, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["success"] is False
    assert send(client).status_code == 201  # the connection is still usable
    assert emu.stats()["created"] == 1


@pytest.mark.parametrize("raw", [b"{not json", b"", b"\xff\xfe", b'{"channel": NaN}', b"[1, 2]", b'"sms"'])
def test_invalid_json_is_400(emu: Emulator, client: httpx.Client, raw: bytes) -> None:
    r = client.post(create_path(), content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["success"] is False
    assert emu.stats()["created"] == 0


# -- body rules -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"content": "x"}, "channel: is required"),
        ({**SMS, "channel": "telegram"}, "channel: must be one of sms, whatsapp, facebook, instagram, email"),
        ({**SMS, "channel": "SMS"}, "channel: must be one of"),
        ({"channel": "facebook"}, "content: is required"),
        ({"channel": "facebook", "content": ""}, "content: must not be empty"),
        ({"channel": "facebook", "content": 5}, "content: must be a string"),
        ({"channel": "facebook", "content": "x" * 4001}, "content: must be at most 4000 characters"),
        ({"channel": "email", "content": "x"}, "subject: is required for channel email"),
        ({"channel": "email", "content": "x", "subject": ""}, "subject: must not be empty"),
        (
            {"channel": "email", "content": "x", "subject": "s" * 256},
            "subject: must be at most 255 characters",
        ),
        ({"channel": "email", "content": "x", "subject": 1}, "subject: must be a string"),
        ({"channel": "email", "content": "x", "subject": "s", "html": ["x"]}, "html: must be a string"),
        ({"channel": "sms", "content": "x"}, "from_phone_number_id: is required for channel sms"),
        ({"channel": "whatsapp", "content": "x"}, "from_phone_number_id: is required for channel whatsapp"),
        (
            {"channel": "sms", "content": "x", "from_phone_number_id": ""},
            "from_phone_number_id: must not be empty",
        ),
        ({**SMS, "media_url": "https://a.b/c"}, "media_url: must be a list of URLs"),
        ({**SMS, "media_url": ["/relative.jpg"]}, "media_url[0]: must be an absolute http(s) URL"),
        (
            {**SMS, "media_url": ["https://a.b/c", "ftp://a.b/c"]},
            "media_url[1]: must be an absolute http(s) URL",
        ),
        ({**SMS, "media_url": [None]}, "media_url[0]: must be an absolute http(s) URL"),
        ({**SMS, "template_id": "t"}, "template_id: unknown field"),
    ],
)
def test_each_body_rule(emu: Emulator, client: httpx.Client, body: dict[str, Any], expected: str) -> None:
    r = send(client, body)
    assert r.status_code == 400, r.text
    assert r.json()["success"] is False and expected in r.json()["message"]
    assert emu.stats()["created"] == 0 and emu.messages() == []


def test_every_failing_field_is_named(client: httpx.Client) -> None:
    r = send(client, {"channel": "email", "content": "", "extra": 1, "media_url": ["nope"]})
    message = r.json()["message"]
    for field in (
        "extra: unknown field",
        "content: must not be empty",
        "subject: is required",
        "media_url[0]",
    ):
        assert field in message


@pytest.mark.parametrize(
    "body",
    [
        SMS,
        {
            "channel": "whatsapp",
            "content": "x",
            "from_phone_number_id": "pn",
            "media_url": ["http://a.b/c.png"],
        },
        {"channel": "facebook", "content": "x"},
        {"channel": "instagram", "content": "x", "media_url": []},
        {"channel": "email", "content": "x", "subject": "s", "html": "<b>x</b>"},
        {"channel": "facebook", "content": "ü" * 4000},
    ],
)
def test_valid_bodies_are_created(emu: Emulator, client: httpx.Client, body: dict[str, Any]) -> None:
    assert send(client, body).status_code == 201
    assert emu.stats()["created"] == 1 and emu.stats()["nulls_received"] == 0


def test_nulls_count_as_absent_but_are_recorded(emu: Emulator, client: httpx.Client) -> None:
    r = send(client, {**SMS, "subject": None, "media_url": None})
    assert r.status_code == 201 and r.json()["data"]["media_url"] == []
    send(client)
    assert [e["had_nulls"] for e in emu.requests()] == [True, False]
    assert emu.stats()["nulls_received"] == 1
    assert emu.messages()[0]["body"]["subject"] is None  # stored as received


# -- idempotency ------------------------------------------------------------------------------


def test_idempotent_replay_and_conflict(emu: Emulator, client: httpx.Client) -> None:
    first = send(client, headers={"Idempotency-Key": "abc"})
    # Same JSON, different key order and spacing: still the same body.
    same = json.dumps(dict(reversed(list(SMS.items()))), indent=2)
    replay = client.post(
        create_path(), content=same, headers={"Idempotency-Key": "abc", "Content-Type": "application/json"}
    )
    assert first.status_code == 201 and "idempotent-replayed" not in first.headers
    assert replay.status_code == 200 and replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["data"]["id"] == first.json()["data"]["id"]
    other_body = send(client, {**SMS, "content": "changed"}, headers={"Idempotency-Key": "abc"})
    other_conv = send(client, conversation_id="conv_2", headers={"Idempotency-Key": "abc"})
    assert other_body.status_code == 409 and other_conv.status_code == 409
    assert other_body.json()["success"] is False
    assert send(client, headers={"Idempotency-Key": "def"}).status_code == 201
    stats = emu.stats()
    assert stats["created"] == 2 and stats["replayed"] == 1 and len(emu.messages()) == 2
    assert [e["replayed"] for e in emu.requests()] == [False, True, False, False, False]


def test_ignoring_idempotency_keys_creates_every_post(emu: Emulator, client: httpx.Client) -> None:
    emu.configure(deduplicate=False)
    first = send(client, headers={"Idempotency-Key": "abc"})
    again = send(client, headers={"Idempotency-Key": "abc"})
    other_body = send(client, {**SMS, "content": "changed"}, headers={"Idempotency-Key": "abc"})
    assert [r.status_code for r in (first, again, other_body)] == [201, 201, 201]
    assert first.json()["data"]["id"] != again.json()["data"]["id"]
    assert emu.stats()["created"] == 3 and emu.stats()["replayed"] == 0 and len(emu.messages()) == 3
    emu.configure(deduplicate=True)
    assert send(client, headers={"Idempotency-Key": "abc2"}).status_code == 201
    assert send(client, headers={"Idempotency-Key": "abc2"}).status_code == 200


def test_ignore_idempotency_keys_flag_starts_without_deduplication() -> None:
    with running_emulator(deduplicate=False) as started:
        assert started.configure()["deduplicate"] is False


def test_empty_idempotency_key_is_400(emu: Emulator, client: httpx.Client) -> None:
    assert send(client, headers={"Idempotency-Key": ""}).status_code == 400
    assert emu.stats()["created"] == 0


# -- delivery progress and messaging windows --------------------------------------------------


def status_of(client: httpx.Client, conversation_id: str, message_id: str) -> str:
    r = client.get(f"{create_path(conversation_id)}/{encode(message_id)}")
    assert r.status_code == 200
    status: str = r.json()["data"]["status"]
    return status


def test_delivery_progression_and_outcomes(emu: Emulator, client: httpx.Client) -> None:
    emu.configure(queued_seconds=0.3, sent_seconds=0.3, outcomes={"conv_read": "read", "conv_x": "stuck"})
    conversations = ["conv_ok", "conv_fail_1", "conv_stuck_1", "conv_read", "conv_x"]
    ids = {c: send(client, conversation_id=c).json()["data"] for c in conversations}
    assert {d["status"] for d in ids.values()} == {"queued"}
    assert [status_of(client, c, d["id"]) for c, d in ids.items()] == ["queued"] * 5
    time.sleep(0.35)
    assert [status_of(client, c, d["id"]) for c, d in ids.items()] == ["sent"] * 5
    time.sleep(0.35)
    finals = [status_of(client, c, d["id"]) for c, d in ids.items()]
    assert finals == ["delivered", "failed", "sent", "read", "sent"]
    assert [m["status"] for m in emu.messages()] == finals


def test_delays_from_the_first_read(emu: Emulator, client: httpx.Client) -> None:
    emu.configure(queued_seconds=0.3, sent_seconds=0.3, delays_from="first_read")
    data = send(client).json()["data"]
    time.sleep(0.7)  # longer than both delays: counted from creation, it would be delivered
    assert [m["status"] for m in emu.messages()] == ["queued"]  # the control API is not a read
    assert status_of(client, "conv_1", data["id"]) == "queued"
    time.sleep(0.35)
    assert status_of(client, "conv_1", data["id"]) == "sent"
    time.sleep(0.35)
    assert status_of(client, "conv_1", data["id"]) == "delivered"
    with pytest.raises(EmulatorError, match="delays_from: must be one of create, first_read"):
        emu.configure(delays_from="never")


def test_zero_delays_still_answer_an_initial_status(emu: Emulator, client: httpx.Client) -> None:
    emu.configure(queued_seconds=0, sent_seconds=0)
    data = send(client).json()["data"]
    assert data["status"] == "sent"  # the reference allows queued or sent, never a final status
    assert status_of(client, "conv_1", data["id"]) == "delivered"


@pytest.mark.parametrize("channel", ["whatsapp", "facebook", "instagram"])
def test_closed_window_is_422(emu: Emulator, client: httpx.Client, channel: str) -> None:
    emu.configure(closed_windows=["conv_win"])
    body = {"channel": channel, "content": "x", "from_phone_number_id": "pn"}
    if channel != "whatsapp":
        body.pop("from_phone_number_id")
    for conversation_id in ("conv_win", "conv_closed_7"):
        r = send(client, body, conversation_id=conversation_id)
        assert r.status_code == 422
        assert r.json() == {
            "success": False,
            "message": "Outside the 24-hour messaging window. Use an approved template instead.",
        }
    assert emu.stats()["created"] == 0
    # Channels without a window still go through, and other conversations are open.
    assert send(client, conversation_id="conv_win").status_code == 201
    assert send(client, body, conversation_id="conv_open").status_code == 201
    assert emu.stats()["created"] == 2


# -- fault injection --------------------------------------------------------------------------


@pytest.mark.parametrize(("when", "created"), [("before", 0), ("after", 1)])
def test_status_fault(emu: Emulator, client: httpx.Client, when: str, created: int) -> None:
    rule = emu.inject("status", status=429, retry_after="2", when=when)
    r = send(client)
    assert r.status_code == 429 and r.headers["retry-after"] == "2"
    assert r.json()["success"] is False
    assert emu.stats()["created"] == created and emu.stats()["faults_applied"] == 1
    assert emu.requests()[0]["fault"] == rule
    assert send(client).status_code == 201  # times=1: used up
    assert emu.faults()[0]["hits"] == 1 and emu.faults()[0]["times"] == 0


def test_after_fault_then_retry_with_same_key_replays(emu: Emulator, client: httpx.Client) -> None:
    emu.inject("status", status=503, when="after", retry_after="Wed, 21 Oct 2015 07:28:00 GMT")
    first = send(client, headers={"Idempotency-Key": "retry-1"})
    assert first.status_code == 503 and first.headers["retry-after"] == "Wed, 21 Oct 2015 07:28:00 GMT"
    again = send(client, headers={"Idempotency-Key": "retry-1"})
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    assert emu.stats()["created"] == 1 and emu.stats()["replayed"] == 1


def test_fault_filters_times_and_order(emu: Emulator, client: httpx.Client) -> None:
    emu.inject("status", status=500, method="GET", times=None)
    emu.inject("status", status=502, conversation_id="conv_b", times=2)
    emu.inject("status", status=504, conversation_id="conv_b", times=1)
    assert send(client).status_code == 201  # POST to conv_1: no rule matches
    codes = [send(client, conversation_id="conv_b").status_code for _ in range(4)]
    assert codes == [502, 502, 504, 201]
    gets = [client.get(f"{create_path()}/msg_x").status_code for _ in range(3)]
    assert gets == [500, 500, 500]
    assert emu.stats()["faults_applied"] == 6 and emu.stats()["created"] == 2


def test_probability_is_seeded(emu: Emulator, client: httpx.Client) -> None:
    def run() -> list[int]:
        emu.inject("status", status=503, probability=0.5, seed=7, times=None)
        return [client.get(f"{create_path()}/m").status_code for _ in range(30)]

    first = run()
    emu.reset()
    assert run() == first
    assert 0 < first.count(503) < 30 and set(first) == {503, 404}


@pytest.mark.parametrize(("when", "created"), [("before", 0), ("after", 1)])
def test_drop_gives_a_transport_error(emu: Emulator, client: httpx.Client, when: str, created: int) -> None:
    rule = emu.inject("drop", when=when)
    with pytest.raises(httpx.RemoteProtocolError):
        send(client, headers={"Idempotency-Key": "d"})
    assert emu.stats()["created"] == created
    [entry] = emu.requests()
    assert entry["status"] == "drop" and entry["fault"] == rule
    assert emu.stats()["responses"] == {"drop": 1}
    # The client can reconnect; with the same key an after-drop retry finds the original.
    assert send(client, headers={"Idempotency-Key": "d"}).status_code == (201 if created == 0 else 200)
    assert emu.stats()["created"] == 1


@pytest.mark.parametrize(("when", "created_during"), [("before", 0), ("after", 1)])
def test_stall_times_out_a_short_read_timeout(emu: Emulator, when: str, created_during: int) -> None:
    emu.inject("stall", stall_seconds=0.6, when=when)
    with httpx.Client(base_url=emu.url, headers=auth(emu), timeout=httpx.Timeout(5.0, read=0.2)) as impatient:
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            send(impatient)
        assert time.monotonic() - started < 0.5
    assert emu.stats()["created"] == created_during
    time.sleep(0.6)  # the stalled request then completes normally
    assert emu.stats()["created"] == 1
    assert emu.requests()[0]["status"] == 201 and emu.requests()[0]["duration"] >= 0.59


def test_stall_then_normal_answer(emu: Emulator, client: httpx.Client) -> None:
    emu.inject("stall", stall_seconds=0.2, method="GET")
    started = time.monotonic()
    assert client.get(f"{create_path()}/m").status_code == 404
    assert time.monotonic() - started >= 0.19


@pytest.mark.parametrize(("when", "status", "created"), [("before", 502, 0), ("after", 200, 1)])
def test_malformed_body(emu: Emulator, client: httpx.Client, when: str, status: int, created: int) -> None:
    emu.inject("malformed", when=when)
    r = send(client)
    assert r.status_code == status and r.headers["content-type"].startswith("text/html")
    with pytest.raises(json.JSONDecodeError):
        r.json()
    emu.inject("malformed", status=201, body="not json at all", when="after")
    r = send(client)
    assert (r.status_code, r.text) == (201, "not json at all")
    assert emu.stats()["created"] == created + 1


def test_bad_control_requests_are_400(emu: Emulator) -> None:
    with pytest.raises(EmulatorError, match="kind: must be one of"):
        emu.inject("explode")
    with pytest.raises(EmulatorError, match="latency_ms"):
        emu.configure(latency_ms=-1)
    with httpx.Client(base_url=emu.url) as c:
        assert c.post("/_emulator/faults", json={"kind": "drop", "oops": 1}).status_code == 400
        assert c.get("/_emulator/nope").status_code == 404
        assert c.put("/_emulator/stats").status_code == 405
    assert emu.faults() == []


def test_reset_clears_everything_but_the_key(emu: Emulator, client: httpx.Client) -> None:
    emu.configure(latency_ms=5, outcomes={"a": "failed"})
    emu.inject("status", times=None, method="GET")
    send(client)
    emu.reset()
    assert emu.messages() == [] and emu.requests() == [] and emu.faults() == []
    assert emu.stats()["created"] == 0 and emu.stats()["requests"] == 0
    assert emu.configure()["latency_ms"] == 0 and emu.configure()["outcomes"] == {}
    assert send(client).status_code == 201


# -- latency, encoding, throughput ------------------------------------------------------------


def test_latency_applies_and_overlaps(emu: Emulator) -> None:
    emu.configure(latency_ms=300)

    async def burst() -> list[int]:
        async with httpx.AsyncClient(base_url=emu.url, headers=auth(emu)) as c:
            responses = await asyncio.gather(*(c.post(create_path(), json=SMS) for _ in range(10)))
        return [r.status_code for r in responses]

    started = time.monotonic()
    assert asyncio.run(burst()) == [201] * 10
    elapsed = time.monotonic() - started
    assert 0.29 <= elapsed < 1.5  # ten requests of 300 ms each, overlapping
    # uvloop timers have millisecond resolution and may fire a hair early.
    assert all(e["duration"] >= 0.29 for e in emu.requests())
    with httpx.Client(base_url=emu.url) as control:
        started = time.monotonic()
        control.get("/_emulator/health")
        assert time.monotonic() - started < 0.3  # control requests are never delayed


@pytest.mark.parametrize("conversation_id", ["a/b", "conv.x", "..", "100%", "with space", "q?x=1#f", "ü-€"])
def test_percent_encoded_ids_round_trip(emu: Emulator, client: httpx.Client, conversation_id: str) -> None:
    r = send(client, conversation_id=conversation_id)
    assert r.status_code == 201, r.text
    data = r.json()["data"]
    assert data["conversation_id"] == conversation_id
    got = client.get(f"{create_path(conversation_id)}/{data['id']}")
    assert got.status_code == 200 and got.json()["data"]["conversation_id"] == conversation_id
    assert emu.messages()[0]["conversation_id"] == conversation_id
    entry = emu.requests()[0]
    assert entry["conversation_id"] == conversation_id and entry["path"] == create_path(conversation_id)


def test_message_ids_are_decoded_too(emu: Emulator, client: httpx.Client) -> None:
    r = client.get(f"{create_path('c/1')}/{encode('msg/x y')}")
    assert r.status_code == 404
    assert emu.requests()[0]["message_id"] == "msg/x y" and emu.requests()[0]["conversation_id"] == "c/1"


def test_serves_2000_creates_over_20_keep_alive_connections(emu: Emulator) -> None:
    # The rate itself is a bench figure (`make bench`, against a bare app in the same run).
    body = json.dumps(SMS).encode()
    request = (
        b"POST /v1/conversations/conv_1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + emu.api_key.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        + body
    )
    port = int(emu.url.rsplit(":", 1)[1])

    async def connection(count: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(count):
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 201")
            length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
        writer.close()

    async def load() -> None:
        await asyncio.gather(*(connection(100) for _ in range(20)))

    asyncio.run(load())
    assert len(emu.requests()) == 2000 == emu.stats()["created"]


# -- the process ------------------------------------------------------------------------------


def test_process_exits_cleanly_on_sigterm() -> None:
    with running_emulator(api_key="vx_test_other") as other:
        assert other.api_key == "vx_test_other"
        with httpx.Client(base_url=other.url) as c:
            wrong = {"Authorization": "Bearer vx_test_wrong_key"}
            assert c.post(create_path(), json=SMS, headers=wrong).status_code == 401
        process = other.process
    assert process is not None and process.returncode == 0


def test_console_entry_point_prints_key_and_url_and_stops_on_sigint() -> None:
    command = [sys.executable, "-m", "vantax_provider.emulator", "--port", "0", "--latency-ms", "1"]
    env = {k: v for k, v in os.environ.items() if k != "VANTAX_EMULATOR_API_KEY"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        key_line = process.stdout.readline() if process.stdout else ""
        assert re.fullmatch(r"VANTAX_EMULATOR_API_KEY=vx_test_[0-9a-f]{32}\n", key_line)
        line = process.stdout.readline() if process.stdout else ""
        assert re.fullmatch(r"VANTAX_EMULATOR_URL=http://127\.0\.0\.1:\d+\n", line)
        url = line.strip().split("=", 1)[1]
        assert httpx.get(url + "/_emulator/config").json()["latency_ms"] == 1
        key = key_line.strip().split("=", 1)[1]
        created = httpx.post(url + create_path(), json=SMS, headers={"Authorization": f"Bearer {key}"})
        assert created.status_code == 201
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr


def test_start_failure_reports_stderr() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(EmulatorError, match="cannot listen"), running_emulator(port=port):
            pass


def test_handles_concurrent_clients(emu: Emulator) -> None:
    def worker(i: int) -> int:
        with httpx.Client(base_url=emu.url, headers=auth(emu)) as c:
            return sum(send(c, headers={"Idempotency-Key": f"k{i % 5}-{j}"}).status_code for j in range(10))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(worker, range(10)))
    # Ten workers, keys shared by pairs: 50 distinct keys, each created once and replayed once.
    assert emu.stats()["created"] == 50 and emu.stats()["replayed"] == 50


# -- bounded memory ---------------------------------------------------------------------------


def test_messages_are_capped_oldest_first_with_their_keys() -> None:
    """--max-messages: the oldest message and its idempotency record go first; memory stays bounded."""
    with (
        running_emulator(max_messages=3) as small,
        httpx.Client(base_url=small.url, headers=auth(small), timeout=5.0) as c,
    ):
        ids = []
        for i in range(5):
            answer = send(c, conversation_id=f"conv_{i}", headers={"Idempotency-Key": f"key-{i}"})
            assert answer.status_code == 201
            ids.append(answer.json()["data"]["id"])
        stats = small.stats()
        assert [m["id"] for m in small.messages()] == ids[2:]
        assert (stats["messages"], stats["evicted"], stats["idempotency_records"]) == (3, 2, 3)
        assert stats["created"] == 5 and stats["max_messages"] == 3
        # An evicted message is gone for reads, and its key no longer replays it: a new one is made.
        assert c.get(f"{create_path('conv_0')}/{ids[0]}").status_code == 404
        again = send(c, conversation_id="conv_0", headers={"Idempotency-Key": "key-0"})
        assert again.status_code == 201 and again.json()["data"]["id"] != ids[0]
        # A key whose message is still kept replays it.
        kept = send(c, conversation_id="conv_4", headers={"Idempotency-Key": "key-4"})
        assert kept.status_code == 200 and kept.json()["data"]["id"] == ids[4]
        assert small.stats()["messages"] == 3 and small.stats()["idempotency_records"] == 3


def test_the_default_cap_and_a_bad_one(emu: Emulator) -> None:
    assert emu.stats()["max_messages"] == 100_000
    bad = subprocess.run(
        [sys.executable, "-m", "vantax_provider.emulator", "--port", "0", "--max-messages", "0"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert bad.returncode == 2 and "--max-messages: must be at least 1, got 0" in bad.stderr
