"""
Hostile loopback servers for the hook's network edges: a scripted TCP server that reads one
request head and answers it as a test says (trickled byte by byte, as a proxy refusing CONNECT,
as a gateway that checks the key before routing...).  Each runs in threads of the test process
on 127.0.0.1 or [::1] and a free port, and is stopped at the end of its ``with`` block; every
loop in it is bounded by the size of its answer and by the stop event.
"""

from __future__ import annotations

import json
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

#: The most bytes of a request head read (a client never sends more here).
MAX_HEAD = 64 * 1024


@dataclass
class Head:
    """One request as received: request line and headers (names lower-cased)."""

    method: str
    target: str
    headers: dict[str, str]

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    def __repr__(self) -> str:  # the headers hold the key: not shown in test reports
        return f"Head({self.method} {self.target})"


@dataclass
class Hostile:
    """What a hostile server received, its address, and the event that stops its answers."""

    url: str = ""
    port: int = 0
    received: list[Head] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __repr__(self) -> str:
        return f"Hostile({self.url})"

    def count(self, method: str | None = None) -> int:
        with self.lock:
            return sum(1 for h in self.received if method is None or h.method == method)


#: How a server answers: called with the request head, the socket and the server.
Respond = Callable[[Head, socket.socket, Hostile], None]


def response(
    status: int, body: bytes | str = b"", headers: list[tuple[str, str]] | None = None, reason: str = "X"
) -> bytes:
    """A whole HTTP/1.1 answer that closes its connection."""
    raw = body.encode() if isinstance(body, str) else body
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{name}: {value}" for name, value in headers or []]
    lines += [f"Content-Length: {len(raw)}", "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + raw


def envelope(status: int, message: str, headers: list[tuple[str, str]] | None = None) -> bytes:
    body = json.dumps({"success": False, "message": message})
    return response(status, body, [("Content-Type", "application/json"), *(headers or [])])


def send(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:
        return


def trickle(sock: socket.socket, data: bytes, interval: float, server: Hostile) -> None:
    """Send ``data`` one byte at a time, ``interval`` seconds apart, until done or stopped."""
    for i in range(len(data)):
        if server.stop.is_set():
            return
        try:
            sock.sendall(data[i : i + 1])
        except OSError:  # the client gave up: what the deadline is for
            return
        server.stop.wait(interval)


def _read_head(sock: socket.socket) -> Head | None:
    data = b""
    while b"\r\n\r\n" not in data and len(data) < MAX_HEAD:
        chunk = sock.recv(4096)
        if not chunk:
            return None
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _version = [*lines[0].split(" "), "", "", ""][:3]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length") or 0)
    while len(rest) < length:
        chunk = sock.recv(min(65536, length - len(rest)))
        if not chunk:
            break
        rest += chunk
    return Head(method, target, headers)


@contextmanager
def hostile_server(respond: Respond, *, ipv6: bool = False) -> Iterator[Hostile]:
    """Serve ``respond`` on a free loopback port (127.0.0.1, or [::1] with ``ipv6``) until exit."""
    hostile = Hostile()

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            sock: socket.socket = self.request
            sock.settimeout(10)  # a client that sends nothing does not hold the thread for ever
            try:
                head = _read_head(sock)
            except OSError:
                return
            if head is None:
                return
            with hostile.lock:
                hostile.received.append(head)
            respond(head, sock, hostile)

    class Server(socketserver.ThreadingTCPServer):
        address_family = socket.AF_INET6 if ipv6 else socket.AF_INET
        daemon_threads = True
        allow_reuse_address = True

    server = Server(("::1" if ipv6 else "127.0.0.1", 0), Handler)
    hostile.port = server.server_address[1]
    hostile.url = f"http://[::1]:{hostile.port}" if ipv6 else f"http://127.0.0.1:{hostile.port}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield hostile
    finally:
        hostile.stop.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def fixed(answer: bytes) -> Respond:
    """Answer every request with ``answer``."""
    return lambda head, sock, server: send(sock, answer)


def keyed(key: str, with_key: Callable[[Head], bytes]) -> Respond:
    """401 unless the request carries ``Bearer key``; with it, ``with_key(head)``."""

    def respond(head: Head, sock: socket.socket, server: Hostile) -> None:
        if head.headers.get("authorization") != f"Bearer {key}":
            send(sock, envelope(401, "Invalid API key"))
        else:
            send(sock, with_key(head))

    return respond


def created(message_id: str = "msg_hostile", **fields: Any) -> bytes:
    body = json.dumps(
        {"success": True, "message": "ok", "data": {"id": message_id, "status": "queued", **fields}}
    )
    return response(201, body, [("Content-Type", "application/json")])
