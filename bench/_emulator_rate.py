"""
The emulator's request rate, against a bare Starlette app on the same server (uvicorn) in the
same run: 2,000 creates over 20 keep-alive connections, timed on the client the same way for both.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
import time

from vantax_provider.emulator.testing import running_emulator

CONNECTIONS = 20
PER_CONNECTION = 100
TARGET_RATIO = 0.5
ABSOLUTE_TARGET = 1000.0  # requests/s on an idle machine, printed beside the ratio

_SMS = {"channel": "sms", "content": "Hello", "from_phone_number_id": "pn_1"}
_BARE_APP = """
import sys, uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

async def create(request):
    await request.json()
    return JSONResponse({"data": {"id": "msg_1", "status": "queued"}}, status_code=201)

app = Starlette(routes=[Route("/v1/conversations/{c}/messages", create, methods=["POST"])])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
"""


def _request(api_key: str) -> bytes:
    body = json.dumps(_SMS).encode()
    head = (
        "POST /v1/conversations/conv_1/messages HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {api_key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _load(port: int, request: bytes) -> float:
    """Requests per second, client-side, all answered 201."""

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(PER_CONNECTION):
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 201"), head[:80]
            match = re.search(rb"content-length: (\d+)", head, re.I)
            assert match is not None
            await reader.readexactly(int(match.group(1)))
        writer.close()

    async def run() -> None:
        await asyncio.gather(*(connection() for _ in range(CONNECTIONS)))

    started = time.perf_counter()
    asyncio.run(run())
    return CONNECTIONS * PER_CONNECTION / (time.perf_counter() - started)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bare_rate() -> float:
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-c", _BARE_APP, str(port)])
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        return _load(port, _request("x"))
    finally:
        server.terminate()
        server.wait(timeout=10)


def report() -> None:
    with running_emulator() as emu:
        rate = _load(int(emu.url.rsplit(":", 1)[1]), _request(emu.api_key))
        created = emu.stats()["created"]
    assert created == CONNECTIONS * PER_CONNECTION, created
    bare = _bare_rate()
    ratio = rate / bare
    verdict = "PASS" if ratio >= TARGET_RATIO else "FAIL"
    print(
        f"emulator: {rate:.0f} creates/s over {CONNECTIONS} connections (target {ABSOLUTE_TARGET:.0f} when "
        f"idle); bare Starlette app {bare:.0f}/s; emulator / bare = {ratio:.2f} (target >= {TARGET_RATIO}) "
        f"{verdict}"
    )
