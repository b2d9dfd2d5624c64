"""
A loopback HTTP server that answers every request with a canned answer, and records what it
received: for answers the emulator cannot give (odd bodies, any status, any header) and for
standing in as a proxy.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Canned:
    """The answer served, and what was received (request line and headers, the key among them)."""

    def __init__(self) -> None:
        self.status = 200
        self.headers: list[tuple[str, str]] = []
        self.body = b""
        self.received: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.url = ""

    def __repr__(self) -> str:  # what it received holds the key: not shown in test reports
        return f"Canned({self.url})"

    def answer(
        self, status: int, body: bytes | str = b"", headers: list[tuple[str, str]] | None = None
    ) -> None:
        with self.lock:
            self.status = status
            self.body = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
            self.headers = list(headers or [])

    def count(self) -> int:
        with self.lock:
            return len(self.received)


def _handler(canned: Canned) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            with canned.lock:
                canned.received.append(
                    {"method": self.command, "path": self.path, "headers": dict(self.headers)}
                )
                status, headers, body = canned.status, canned.headers, canned.body
            if status in (204, 304):
                body = b""  # no body may follow these: a client would read it as the next answer
            self.send_response_only(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")  # each answer stands alone
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True

        do_GET = do_POST = _serve

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


@contextmanager
def canned_server() -> Iterator[Canned]:
    """A server on 127.0.0.1 and a free port, in a thread of this process; shut down on exit."""
    canned = Canned()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(canned))
    server.daemon_threads = True
    canned.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield canned
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
