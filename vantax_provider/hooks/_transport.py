"""
The hook's HTTP: one pooled sync client, async clients spread over small pools, and the one
retry loop (sync and async) that every request goes through.

One httpx async pool slows down sharply with many concurrent connections (encode/httpx#3215):
each request scans every connection of its pool several times.  The async connections are
therefore spread over pools of ``ASYNC_POOL_SIZE``, taken in turn, with one shared TLS context
(docs/performance.md has the measurement).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import TYPE_CHECKING, Any

from vantax_provider import __version__
from vantax_provider.exceptions import VantaxError, VantaxRateLimitError
from vantax_provider.hooks._wire import (
    Attempts,
    has_idempotency_key,
    read_answer,
    transport_error,
    transport_errors,
)

if TYPE_CHECKING:
    import ssl

    import httpx

    from vantax_provider.hooks._pacing import AsyncPacer
    from vantax_provider.hooks._settings import VantaxSettings
    from vantax_provider.models import Message

#: Connections per async pool.
ASYNC_POOL_SIZE = 8
#: Seconds an idle pooled connection is kept.  Servers commonly close idle connections after
#: 5 s (uvicorn, Node); a client that keeps them as long races that close, and a POST written
#: into a connection the server is closing fails unanswered: uncertain (issue 10, the soak).
KEEPALIVE_EXPIRY = 2.0


class Transport:
    """
    The clients of one hook, created on first use, and its requests with their retries.

    :param max_connections: most connections open at once (sync; async in total).
    :param pacer: paces the async requests (the hook's ``rate_limit`` and the account's).
    :param log: the hook's logger.
    """

    def __init__(self, max_connections: int, pacer: AsyncPacer, log: Any) -> None:
        self.max_connections, self.pacer, self.log = max_connections, pacer, log
        #: The last sync answer was an idempotent replay (for the send log).
        self.replayed = False
        self._client: httpx.Client | None = None
        self._aclients: list[httpx.AsyncClient] = []
        self._aclient_loop: asyncio.AbstractEventLoop | None = None
        self._turn = itertools.count()
        self._ssl_context: ssl.SSLContext | None = None

    def sync(self, settings: VantaxSettings) -> httpx.Client:
        import httpx

        from vantax_provider.hooks._answers import sync_transport

        if self._client is None:
            kwargs, transport = self._kwargs(settings, self.max_connections)
            self._client = httpx.Client(**kwargs, transport=sync_transport(**transport))
        return self._client

    def next_async(self, settings: VantaxSettings) -> httpx.AsyncClient:
        """The next async pool in turn, of the running event loop."""
        import httpx

        from vantax_provider.hooks._answers import async_transport

        loop = asyncio.get_running_loop()
        if self._aclient_loop is not loop:
            # A client is bound to the loop it first ran on; asyncio.run() makes a new loop.
            self._aclients, self._aclient_loop = [], loop
        shards = -(-self.max_connections // ASYNC_POOL_SIZE)
        turn = next(self._turn) % shards
        if turn >= len(self._aclients):
            size = min(ASYNC_POOL_SIZE, self.max_connections - ASYNC_POOL_SIZE * len(self._aclients))
            kwargs, transport = self._kwargs(settings, size)
            client = httpx.AsyncClient(**kwargs, transport=async_transport(**transport))
            self._aclients.append(client)
            return client
        return self._aclients[turn]

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        clients, self._aclients, self._aclient_loop = self._aclients, [], None
        for client in clients:
            await client.aclose()

    def call(self, settings: VantaxSettings, method: str, path: str, **kwargs: Any) -> Message:
        from vantax_provider.hooks._answers import fetch

        client = self.sync(settings)
        attempt = Attempts(self.log, settings.retry, method, path, idempotent=has_idempotency_key(kwargs))
        while True:
            try:
                response, body = fetch(client, client.build_request(method, path, **kwargs))
                outcome = read_answer(response, body, method, path, settings)
            except transport_errors() as exc:
                outcome = transport_error(exc, method, path, settings)
            if not isinstance(outcome, VantaxError):
                # A 200 with Idempotent-Replayed answers a POST the service had already created.
                self.replayed = response.headers.get("Idempotent-Replayed", "").lower() == "true"
                return outcome
            time.sleep(attempt.wait_or_raise(outcome))

    async def acall(
        self,
        settings: VantaxSettings,
        method: str,
        path: str,
        *,
        repeat_uncertain: bool = True,
        **kwargs: Any,
    ) -> Message:
        from vantax_provider.hooks._answers import afetch

        pacer = self.pacer
        pacer.set_account_limit(settings.rate_limit, settings.rate_limit_share)
        idempotent = repeat_uncertain and has_idempotency_key(kwargs)
        attempt = Attempts(self.log, settings.retry, method, path, idempotent=idempotent)
        while True:
            # The client first: making one (TLS context, pool) takes milliseconds that would
            # otherwise land between the paced start and the request, bunching the first sends.
            client = self.next_async(settings)
            await pacer.acquire()
            try:
                response, body = await afetch(client, client.build_request(method, path, **kwargs))
                outcome = read_answer(response, body, method, path, settings)
            except transport_errors() as exc:
                outcome = transport_error(exc, method, path, settings)
            if not isinstance(outcome, VantaxError):
                pacer.on_success()
                return outcome
            rate_limited = isinstance(outcome, VantaxRateLimitError)
            if rate_limited:
                pacer.on_rate_limited()  # the account's share adapts (AIMD), see _pacing
            wait = attempt.wait_or_raise(outcome)
            if rate_limited and pacer.adaptive is None:
                pacer.pause_for(wait)  # no account limit known: every request of this hook waits
            else:
                # With the account's limit known, the cut share already slows the others down;
                # pausing them too for a whole-second Retry-After would leave the budget unused.
                await asyncio.sleep(wait)

    def _kwargs(
        self, settings: VantaxSettings, max_connections: int
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The client's arguments, and its transport's (which bounds each answer: ``_answers``)."""
        import httpx

        # httpx logs every request at INFO; a bulk send would write thousands of lines.
        httpx_log = logging.getLogger("httpx")
        if httpx_log.level == logging.NOTSET:
            httpx_log.setLevel(logging.WARNING)

        if self._ssl_context is None:  # one TLS context for all clients: each costs milliseconds
            self._ssl_context = httpx.create_ssl_context()
        client = {
            "base_url": settings.base_url,
            # No proxy, netrc or other settings from the environment: a proxy would see the key.
            # Only the ``proxy`` extra sets one.  (CA bundles from SSL_CERT_FILE still apply.)
            "trust_env": False,
            "timeout": httpx.Timeout(settings.timeout, connect=settings.connect_timeout),
            "headers": {
                "Authorization": f"Bearer {settings.api_key}",
                "User-Agent": f"airflow-provider-vantax/{__version__}",
                "Accept": "application/json",
            },
            "follow_redirects": False,
        }
        transport = {
            "trust_env": False,
            "proxy": settings.proxy,
            "verify": self._ssl_context,
            "limits": httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
                keepalive_expiry=KEEPALIVE_EXPIRY,
            ),
        }
        return client, transport
