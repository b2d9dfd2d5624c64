"""Small ASGI helpers shared by the API and the control endpoints."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any, NamedTuple

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON_TYPE = b"application/json"


class Reply(NamedTuple):
    """A complete HTTP answer.

    :param status: HTTP status code.
    :param body: encoded body.
    :param content_type: value of the Content-Type header.
    :param headers: further headers (lower-case names).
    """

    status: int
    body: bytes
    content_type: bytes = JSON_TYPE
    headers: Sequence[tuple[bytes, bytes]] = ()


def json_reply(status: int, payload: Any, headers: list[tuple[bytes, bytes]] | None = None) -> Reply:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Reply(status, body, JSON_TYPE, headers or [])


def error_reply(status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> Reply:
    """The error envelope the provider assumes: ``{"success": false, "message": "..."}``."""
    return json_reply(status, {"success": False, "message": message}, headers)


async def send_reply(send: Send, reply: Reply) -> None:
    headers = [
        (b"content-type", reply.content_type),
        (b"content-length", str(len(reply.body)).encode("ascii")),
        *reply.headers,
    ]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})


async def read_body(receive: Receive, limit: int, headers: dict[bytes, bytes]) -> tuple[bytes, bool]:
    """``(body, too_large)``; stops reading past ``limit`` (the server discards the rest)."""
    declared = headers.get(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return b"", True
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False  # the client went away; nothing more will come
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return b"", True
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks), False
