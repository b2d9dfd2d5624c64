"""
Reading answers: the read timeout is a deadline for the whole answer, and a body is bounded.

httpx applies its read timeout to each read of the socket, so a server that trickles one byte a
second holds an attempt for as long as it likes.  The hook's transports therefore wrap httpcore's
network backend: the first read after a request was written starts a clock, and every later read
of that answer waits only for what is left of the timeout (sync and async alike, the Test button
and ``get_conn()`` users too).  A body is read up to :data:`MAX_ANSWER_BYTES`, decoded.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import httpcore

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

#: The most bytes of an answer's body the hook reads (after decoding); a longer body is not
#: read.  A Vantax answer is a few kilobytes: one message, its content at most 4,000 characters.
MAX_ANSWER_BYTES = 1024 * 1024


class _Deadline:
    """The clock of one answer on one connection: started by its first read, reset by a write."""

    __slots__ = ("ends",)

    def __init__(self) -> None:
        self.ends: float | None = None

    def left(self, timeout: float | None) -> float | None:
        if timeout is None:  # no timeout asked for: no deadline either
            return None
        now = time.monotonic()
        if self.ends is None:
            self.ends = now + timeout
            return timeout
        left = self.ends - now
        if left <= 0:
            raise httpcore.ReadTimeout(f"the answer took longer than the timeout ({timeout:g}s)")
        return min(timeout, left)


class _Stream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream, self._deadline = stream, _Deadline()

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, self._deadline.left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._deadline.ends = None  # a new request: its answer gets the whole timeout
        self._stream.write(buffer, timeout)

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        return _Stream(self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _AsyncStream(httpcore.AsyncNetworkStream):
    def __init__(self, stream: httpcore.AsyncNetworkStream) -> None:
        self._stream, self._deadline = stream, _Deadline()

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._stream.read(max_bytes, self._deadline.left(timeout))

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._deadline.ends = None
        await self._stream.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        return _AsyncStream(await self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self, backend: httpcore.NetworkBackend) -> None:
        self._backend = backend

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        return _Stream(self._backend.connect_tcp(host, port, timeout, local_address, socket_options))

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        return _Stream(self._backend.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


class _AsyncBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, backend: httpcore.AsyncNetworkBackend) -> None:
        self._backend = backend

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._backend.connect_tcp(host, port, timeout, local_address, socket_options)
        return _AsyncStream(stream)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        return _AsyncStream(await self._backend.connect_unix_socket(path, timeout, socket_options))

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


def _wrap(transport: Any, wrapper: type[_Backend] | type[_AsyncBackend]) -> None:
    # httpx keeps its httpcore pool (plain or proxy) in ``_pool``, and httpcore its backend in
    # ``_network_backend``; neither takes a backend through httpx's API.
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if backend is None:  # pragma: no cover - an httpx/httpcore whose layout changed
        log.warning("Cannot bound the Vantax answer time with this httpx: the timeout is per read.")
        return
    pool._network_backend = wrapper(backend)  # type: ignore[union-attr]


def sync_transport(**kwargs: Any) -> httpx.HTTPTransport:
    """An ``httpx.HTTPTransport`` (same arguments) whose read timeout bounds each whole answer."""
    import httpx

    transport = httpx.HTTPTransport(**kwargs)
    _wrap(transport, _Backend)
    return transport


def async_transport(**kwargs: Any) -> httpx.AsyncHTTPTransport:
    """Async twin of :func:`sync_transport`."""
    import httpx

    transport = httpx.AsyncHTTPTransport(**kwargs)
    _wrap(transport, _AsyncBackend)
    return transport


def _too_long(response: httpx.Response) -> bool:
    length = response.headers.get("Content-Length", "")
    return length.isdigit() and int(length) > MAX_ANSWER_BYTES


def fetch(client: httpx.Client, request: httpx.Request) -> tuple[httpx.Response, bytes | None]:
    """Send ``request``; the answer and its body, None when longer than :data:`MAX_ANSWER_BYTES`."""
    response = client.send(request, stream=True)
    try:
        if _too_long(response):
            return response, None
        body = bytearray()
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > MAX_ANSWER_BYTES:
                return response, None
        return response, bytes(body)
    finally:
        response.close()  # unread, the connection is closed rather than reused


async def afetch(client: httpx.AsyncClient, request: httpx.Request) -> tuple[httpx.Response, bytes | None]:
    """Async twin of :func:`fetch`."""
    response = await client.send(request, stream=True)
    try:
        if _too_long(response):
            return response, None
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > MAX_ANSWER_BYTES:
                return response, None
        return response, bytes(body)
    finally:
        await response.aclose()
