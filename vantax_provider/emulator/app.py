"""The emulator's ASGI application: the Vantax API under ``/v1`` and the control API under ``/_emulator``.

A raw ASGI callable rather than a framework: routing is two fixed path shapes, and skipping a
framework's per-request objects keeps the emulator far above the rates the client is tested at.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import time
from collections.abc import Awaitable, Callable, MutableMapping
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote_to_bytes

from vantax_provider.emulator import rules
from vantax_provider.emulator.control import ControlApi
from vantax_provider.emulator.faults import FaultRule
from vantax_provider.emulator.replies import Reply, error_reply, json_reply, read_body, send_reply
from vantax_provider.emulator.state import Store, canonical_json

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_CREATED = "Message sent successfully"
_INVALID = object()  # sentinel: the body is not JSON
_WANTED = frozenset({b"authorization", b"content-type", b"content-length", b"idempotency-key"})


def _segment(raw: bytes) -> str | None:
    """Percent-decode one raw path segment; None when it is empty or not UTF-8."""
    if not raw:
        return None
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return None


def route(raw_path: bytes) -> tuple[str | None, str | None, str | None]:
    """``(kind, conversation_id, message_id)``; split before decoding so ``%2F`` stays in its segment."""
    parts = raw_path.split(b"/")
    if len(parts) not in (5, 6) or parts[:3] != [b"", b"v1", b"conversations"] or parts[4] != b"messages":
        return None, None, None
    conversation_id = _segment(parts[3])
    if conversation_id is None:
        return None, None, None
    if len(parts) == 5:
        return "create", conversation_id, None
    message_id = _segment(parts[5])
    return ("get", conversation_id, message_id) if message_id is not None else (None, None, None)


def _auth_ok(value: bytes | None, api_key: str) -> bool:
    if value is None:
        return False
    scheme, _, token = value.partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), api_key.encode("utf-8"))


def _is_json_type(value: bytes | None) -> bool:
    if value is None:
        return False
    media_type = value.split(b";", 1)[0].strip().lower()
    return media_type == b"application/json"


def _parse_json(body: bytes) -> Any:
    def reject_constant(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    try:
        return json.loads(body.decode("utf-8"), parse_constant=reject_constant)
    except (UnicodeDecodeError, ValueError):
        return _INVALID


#: What :func:`_apply_fault` returns when the request goes on as usual (None means "drop").
_NO_FAULT: Any = object()


async def _apply_fault(rule: FaultRule | None, req: _Request) -> Reply | None:
    """The fault's answer (None drops the connection), or ``_NO_FAULT`` after a stall or no rule."""
    if rule is None:
        return _NO_FAULT  # type: ignore[no-any-return]
    req.entry["fault"] = rule.id
    if rule.kind == "drop":
        return None
    if rule.kind != "stall":
        return _fault_reply(rule)
    await asyncio.sleep(rule.stall_seconds)
    return _NO_FAULT  # type: ignore[no-any-return]


def _fault_reply(rule: FaultRule) -> Reply:
    headers = [] if rule.retry_after is None else [(b"retry-after", rule.retry_after.encode("latin-1"))]
    if rule.kind == "malformed":
        return Reply(rule.status, rule.body.encode("utf-8"), b"text/html; charset=utf-8", headers)
    try:
        phrase = HTTPStatus(rule.status).phrase
    except ValueError:
        phrase = "Error"
    return error_reply(rule.status, f"{phrase} (injected fault {rule.id})", headers)


async def _drop(send: Send) -> None:
    # Promise a body, send a fragment, and return: uvicorn then closes the transport, so the client
    # sees a truncated response (httpx.RemoteProtocolError), never a 5xx it could parse.
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
        }
    )
    await send({"type": "http.response.body", "body": b'{"success": true, "mes', "more_body": True})


class _Request:
    """What one API request carries, gathered once."""

    __slots__ = ("body", "conversation_id", "entry", "headers", "kind", "message_id", "method", "parsed")

    def __init__(self, scope: Scope, raw_path: bytes, api_key: str) -> None:
        self.method: str = scope["method"]
        self.kind, self.conversation_id, self.message_id = route(raw_path)
        self.headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            if name in _WANTED:
                self.headers[name] = value
        key = self.headers.get(b"idempotency-key")
        path = raw_path.decode("latin-1")
        if scope.get("query_string"):
            path += "?" + scope["query_string"].decode("latin-1")
        self.body = b""
        self.parsed: Any = _INVALID
        # Never the key or the Authorization header itself: only whether it was right.
        self.entry: dict[str, Any] = {
            "t": time.monotonic(),
            "method": self.method,
            "path": path,
            "kind": self.kind,
            "conversation_id": self.conversation_id,
            "message_id": self.message_id,
            "idempotency_key": None if key is None else key.decode("latin-1"),
            "authorization_ok": _auth_ok(self.headers.get(b"authorization"), api_key),
            "had_nulls": False,
            "fault": None,
            "replayed": False,
            "status": None,
        }


class EmulatorApp:
    """The ASGI application.

    :param store: the state it serves and records into.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.control = ControlApi(store)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
        if raw_path == b"/_emulator" or raw_path.startswith(b"/_emulator/"):
            await send_reply(send, await self.control.handle(scope, raw_path, receive))
            return
        await self._api(scope, receive, send, raw_path)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _api(self, scope: Scope, receive: Receive, send: Send, raw_path: bytes) -> None:
        store = self.store
        req = _Request(scope, raw_path, store.api_key)
        entry = req.entry
        latency = store.settings.latency_ms
        if latency > 0:
            await asyncio.sleep(latency / 1000.0)
        reply = await self._answer(req, receive)
        if reply is None:
            await _drop(send)
            entry["status"] = "drop"
        else:
            await send_reply(send, reply)
            entry["status"] = reply.status
        entry["duration"] = time.monotonic() - entry["t"]
        store.record(entry)

    async def _answer(self, req: _Request, receive: Receive) -> Reply | None:
        """The reply to send, or None to drop the connection."""
        store = self.store
        if req.kind is None:
            return error_reply(404, "Not found")
        allowed = "POST" if req.kind == "create" else "GET"
        if req.method != allowed:
            return error_reply(405, "Method not allowed", [(b"allow", allowed.encode())])
        too_large = False
        if req.kind == "create":
            req.body, too_large = await read_body(receive, rules.MAX_BODY_BYTES, req.headers)
            if not too_large:
                req.parsed = _parse_json(req.body)
                if b"null" in req.body and req.parsed is not _INVALID:
                    req.entry["had_nulls"] = rules.contains_null(req.parsed)
        conversation_id = str(req.conversation_id)
        fault = await _apply_fault(store.pick_fault("before", req.method, conversation_id), req)
        if fault is not _NO_FAULT:
            return fault

        if not req.entry["authorization_ok"]:
            message = "Invalid API key" if b"authorization" in req.headers else "Missing API key"
            return error_reply(401, message, [(b"www-authenticate", b"Bearer")])
        wait = store.take_token()
        if wait is not None:
            # Whole seconds, as HTTP's delta-seconds form has it, never 0.
            seconds = str(max(1, math.ceil(wait))).encode()
            return error_reply(429, "Rate limit exceeded for this account", [(b"retry-after", seconds)])
        reply = self._create(req, too_large) if req.kind == "create" else self._get(req)

        if 200 <= reply.status < 300:
            fault = await _apply_fault(store.pick_fault("after", req.method, conversation_id), req)
            if fault is not _NO_FAULT:
                return fault
        return reply

    def _get(self, req: _Request) -> Reply:
        message = self.store.messages.get(str(req.message_id))
        if message is None or message.conversation_id != req.conversation_id:
            return error_reply(404, "Message not found")
        now = time.monotonic()
        message.mark_read(now)
        return json_reply(200, {"success": True, "message": "OK", "data": message.data(now)})

    def _create(self, req: _Request, too_large: bool) -> Reply:
        # Synchronous from here on: no await between the idempotency check and the insert.
        store = self.store
        if not _is_json_type(req.headers.get(b"content-type")):
            return error_reply(415, "Content-Type must be application/json")
        if too_large:
            return error_reply(413, f"Request body is larger than {rules.MAX_BODY_BYTES} bytes")
        if req.parsed is _INVALID:
            return error_reply(400, "Request body is not valid JSON")
        errors = rules.validate_body(req.parsed)
        if errors:
            return error_reply(400, "Invalid request body: " + "; ".join(errors))
        body: dict[str, Any] = req.parsed
        conversation_id = str(req.conversation_id)
        key: str | None = req.entry["idempotency_key"]
        canonical = ""
        if key is not None:
            if not 1 <= len(key) <= rules.IDEMPOTENCY_KEY_MAX:
                return error_reply(
                    400, f"Idempotency-Key must be 1 to {rules.IDEMPOTENCY_KEY_MAX} characters"
                )
            canonical = canonical_json({"conversation_id": conversation_id, "body": body})
            try:
                original = store.replay_for(key, conversation_id, canonical)
            except ValueError as exc:
                return error_reply(409, str(exc))
            if original is not None:
                store.counts["replayed"] += 1
                req.entry["replayed"] = True
                req.entry["message_id"] = original.id
                envelope = {"success": True, "message": _CREATED, "data": original.data(time.monotonic())}
                return json_reply(200, envelope, [(b"idempotent-replayed", b"true")])
        channel = body["channel"]
        if rules.window_closed(conversation_id, channel, store.settings.closed_windows):
            return error_reply(422, rules.WINDOW_CLOSED_MESSAGE)
        message = store.create(conversation_id, body, key, canonical)
        req.entry["message_id"] = message.id
        data = message.data(message.created_monotonic, initial=True)
        return json_reply(201, {"success": True, "message": _CREATED, "data": data})
