"""Command line: ``python -m vantax_provider.emulator`` / ``vantax-emulator``.

Prints ``VANTAX_EMULATOR_URL=http://HOST:PORT`` on stdout once it is accepting connections, so a
parent process (``testing.running_emulator``) can start it on port 0 and learn the real port.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from types import FrameType

import uvicorn

from vantax_provider.emulator import API_KEY_ENV, new_api_key
from vantax_provider.emulator.app import EmulatorApp
from vantax_provider.emulator.state import DEFAULT_MAX_MESSAGES, Settings, Store

DEFAULT_PORT = 8040
URL_PREFIX = "VANTAX_EMULATOR_URL="


class _HideDropErrors(logging.Filter):
    """Injected ``drop`` faults end responses early on purpose; uvicorn would log each as an error."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "returned without completing response" not in record.getMessage()


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vantax-emulator", description="Local emulator of the Vantax API.")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="port; 0 picks a free one (default 8040)"
    )
    parser.add_argument(
        "--api-key",
        default=None,
        help=f"the accepted bearer token (default: ${API_KEY_ENV}, else a random key, printed at start)",
    )
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay added to every API request")
    parser.add_argument("--queued-seconds", type=float, default=0.05, help="time a message stays queued")
    parser.add_argument("--sent-seconds", type=float, default=0.1, help="time it then stays sent")
    parser.add_argument(
        "--ignore-idempotency-keys",
        action="store_true",
        help="act as a service that does not deduplicate: every POST creates a message",
    )
    parser.add_argument(
        "--max-messages",
        type=_positive_int,
        default=DEFAULT_MAX_MESSAGES,
        help=f"messages kept; the oldest go first, with their keys (default {DEFAULT_MAX_MESSAGES})",
    )
    parser.add_argument(
        "--rate-limit",
        type=float,
        default=0.0,
        help="the account's limit in API requests per second; over it, 429 with Retry-After (0: none)",
    )
    parser.add_argument(
        "--rate-burst",
        type=float,
        default=0.0,
        help="requests the limit lets through at once (0: one second's)",
    )
    parser.add_argument(
        "--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug", "trace"]
    )
    return parser


async def _serve(server: uvicorn.Server, sock: socket.socket, url: str) -> None:
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            await task  # startup failed: re-raise its error
            return
        await asyncio.sleep(0.005)
    print(URL_PREFIX + url, flush=True)
    await task


def _ignore_signal(signum: int, frame: FrameType | None) -> None:
    """uvicorn re-raises the signal that stopped it; with this handler that ends in a clean exit 0."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the emulator until SIGTERM/SIGINT. Returns the exit status."""
    args = _parser().parse_args(argv)
    for value, name in ((args.latency_ms, "--latency-ms"), (args.queued_seconds, "--queued-seconds")):
        if value < 0:
            _parser().error(f"{name} must not be negative")
    if args.rate_limit < 0 or args.rate_burst < 0:
        _parser().error("--rate-limit and --rate-burst must not be negative")
    if args.sent_seconds < 0:
        _parser().error("--sent-seconds must not be negative")
    settings = Settings(
        latency_ms=args.latency_ms,
        queued_seconds=args.queued_seconds,
        sent_seconds=args.sent_seconds,
        deduplicate=not args.ignore_idempotency_keys,
        rate_limit=args.rate_limit,
        rate_burst=args.rate_burst,
    )
    api_key = args.api_key or os.environ.get(API_KEY_ENV)
    if not api_key:
        api_key = new_api_key()
        print(f"{API_KEY_ENV}={api_key}", flush=True)  # a throw-away local key: the user needs to see it
    app = EmulatorApp(Store(api_key, settings, max_messages=args.max_messages))

    # Bind ourselves so that port 0 works and the real port is known before announcing it.
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as exc:
        print(f"vantax-emulator: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    port = sock.getsockname()[1]
    host = f"[{args.host}]" if family == socket.AF_INET6 else args.host

    config = uvicorn.Config(
        app,
        loop="auto",  # uvloop when installed
        http="auto",  # httptools when installed
        lifespan="off",
        access_log=False,
        server_header=False,
        log_level=args.log_level,
        timeout_graceful_shutdown=1,  # don't wait out injected stalls on exit
        backlog=4096,
    )
    server = uvicorn.Server(config)
    logging.getLogger("uvicorn.error").addFilter(_HideDropErrors())
    signal.signal(signal.SIGTERM, _ignore_signal)
    signal.signal(signal.SIGINT, _ignore_signal)

    loop_factory = config.get_loop_factory()
    loop = loop_factory() if loop_factory is not None else asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(_serve(server, sock, f"http://{host}:{port}"))
    finally:
        loop.close()
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
