"""The Vantax hook: the connection, pooled sync and async HTTP clients, retries and typed errors."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from airflow.sdk.bases.hook import BaseHook

from vantax_provider import __version__
from vantax_provider.contract import DEFAULT_CONN_ID
from vantax_provider.defaults import DEFAULT_POLL_INTERVAL
from vantax_provider.exceptions import VantaxError, VantaxRateLimitError, bound_text
from vantax_provider.hooks._pacing import AsyncPacer
from vantax_provider.hooks._settings import (
    VantaxSettings,
    amask_api_key,
    mask_api_key,
    settings_from_connection,
)
from vantax_provider.hooks._wire import (
    Attempts,
    create_call,
    has_idempotency_key,
    message_path,
    path_segment,
    read_answer,
    scrub,
    transport_error,
    transport_errors,
)
from vantax_provider.models import (
    PHONE_CHANNELS,
    BulkItem,
    BulkProgress,
    Channel,
    DeliveryCheck,
    Message,
    SendMessageRequest,
    build_send_request,
)
from vantax_provider.status import (
    TRANSIENT_ERRORS,
    Outcome,
    judge,
    status_set,
    timeout_text,
)

if TYPE_CHECKING:
    import ssl

    import httpx
    from airflow.sdk import Connection


#: Connections per async pool (see ``get_async_conn``).
ASYNC_POOL_SIZE = 8
#: Seconds an idle pooled connection is kept.  Servers commonly close idle connections after
#: 5 s (uvicorn, Node); a client that keeps them as long races that close, and a POST written
#: into a connection the server is closing fails unanswered: uncertain (issue 10, the soak).
KEEPALIVE_EXPIRY = 2.0

__all__ = ["VantaxHook"]


class VantaxHook(BaseHook):
    """
    Talks to the Vantax messages API.

    One pooled client is kept per hook (sync and async each), retries happen here and nowhere
    else, and every failure is raised as a :class:`~vantax_provider.exceptions.VantaxError`.

    :param vantax_conn_id: the Airflow connection: API key in the password, base URL in the host,
        extras ``timeout``, ``connect_timeout``, ``max_retries``, ``retry_backoff`` (first backoff,
        seconds), ``max_retry_after``, ``max_retry_time``, ``default_from_phone_number_id``,
        ``dashboard_url``, ``proxy`` (proxies are never read from the environment), ``rate_limit``
        (the account's requests per second, all tasks together: async sends and status reads adapt
        to it, see docs/scale.md) and ``rate_limit_share``.
    :param timeout: read timeout in seconds; overrides the connection's ``timeout`` extra.
    :param max_retries: overrides the connection's ``max_retries`` extra.
    :param rate_limit: most async requests started per second by this hook; None for no limit.
    :param max_connections: most connections the hook keeps open (sync; async in total).
    """

    conn_name_attr = "vantax_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = "vantax"
    hook_name = "Vantax"

    def __init__(
        self,
        vantax_conn_id: str = default_conn_name,
        *,
        timeout: float | None = None,
        max_retries: int | None = None,
        rate_limit: float | None = None,
        max_connections: int = 100,
    ) -> None:
        super().__init__()
        self.vantax_conn_id = vantax_conn_id
        self._timeout = timeout
        self._max_retries = max_retries
        self._max_connections = max_connections
        self.pacer = AsyncPacer(rate_limit)
        self._settings: VantaxSettings | None = None
        self._client: httpx.Client | None = None
        self._aclients: list[httpx.AsyncClient] = []
        self._aclient_loop: asyncio.AbstractEventLoop | None = None
        self._turn = itertools.count()
        self._ssl_context: ssl.SSLContext | None = None
        self._replayed = False  # the last sync answer was an idempotent replay (for the send log)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vantax_conn_id={self.vantax_conn_id!r})"

    # -- connection -------------------------------------------------------------------------

    def _apply_overrides(self, settings: VantaxSettings) -> VantaxSettings:
        if self._timeout is not None:
            settings = replace(settings, timeout=self._timeout)
        if self._max_retries is not None:
            settings = replace(settings, retry=replace(settings.retry, max_retries=self._max_retries))
        return settings

    @property
    def settings(self) -> VantaxSettings:
        if self._settings is None:
            conn = self.get_connection(self.vantax_conn_id)
            settings = self._apply_overrides(settings_from_connection(conn))
            mask_api_key(settings.api_key)
            if settings.proxy:
                mask_api_key(settings.proxy)
            self._settings = settings
        return self._settings

    async def aget_settings(self) -> VantaxSettings:
        if self._settings is None:
            conn = await _get_connection_async(self)
            settings = self._apply_overrides(settings_from_connection(conn))
            await amask_api_key(settings.api_key)
            if settings.proxy:
                await amask_api_key(settings.proxy)
            self._settings = settings
        return self._settings

    def _client_kwargs(self, settings: VantaxSettings, max_connections: int) -> dict[str, Any]:
        import logging

        import httpx

        # httpx logs every request at INFO; a bulk send would write thousands of lines.
        httpx_log = logging.getLogger("httpx")
        if httpx_log.level == logging.NOTSET:
            httpx_log.setLevel(logging.WARNING)

        if self._ssl_context is None:  # one TLS context for all clients: each costs milliseconds
            self._ssl_context = httpx.create_ssl_context()
        return {
            "base_url": settings.base_url,
            # No proxy, netrc or other settings from the environment: a proxy would see the key.
            # Only the ``proxy`` extra sets one.  (CA bundles from SSL_CERT_FILE still apply.)
            "trust_env": False,
            "proxy": settings.proxy,
            "verify": self._ssl_context,
            "timeout": httpx.Timeout(settings.timeout, connect=settings.connect_timeout),
            "headers": {
                "Authorization": f"Bearer {settings.api_key}",
                "User-Agent": f"airflow-provider-vantax/{__version__}",
                "Accept": "application/json",
            },
            "limits": httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
                keepalive_expiry=KEEPALIVE_EXPIRY,
            ),
            "follow_redirects": False,
        }

    def get_conn(self) -> httpx.Client:
        """The pooled sync client, created on first use."""
        import httpx

        if self._client is None:
            self._client = httpx.Client(**self._client_kwargs(self.settings, self._max_connections))
        return self._client

    async def get_async_conn(self) -> httpx.AsyncClient:
        """
        An async client of the running event loop, created on first use.

        The hook's connections are spread over several small pools, taken in turn: one httpx
        async pool slows down sharply with many concurrent connections (encode/httpx#3215).
        """
        import httpx

        loop = asyncio.get_running_loop()
        if self._aclient_loop is not loop:
            # A client is bound to the loop it first ran on; asyncio.run() makes a new loop.
            self._aclients, self._aclient_loop = [], loop
        shards = -(-self._max_connections // ASYNC_POOL_SIZE)
        turn = next(self._turn) % shards
        if turn >= len(self._aclients):
            settings = await self.aget_settings()
            size = min(ASYNC_POOL_SIZE, self._max_connections - ASYNC_POOL_SIZE * len(self._aclients))
            client = httpx.AsyncClient(**self._client_kwargs(settings, size))
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

    def conversation_url(self, conversation_id: str) -> str:
        """
        The conversation in the Vantax dashboard, from the connection's ``dashboard_url`` extra.

        ``{conversation_id}`` is replaced, path-encoded (dots too, so ``..`` cannot climb the
        dashboard's path); empty when the connection has no ``dashboard_url``.
        """
        url = self.settings.dashboard_url
        return url.replace("{conversation_id}", path_segment(conversation_id)) if url else ""

    # -- messages ---------------------------------------------------------------------------

    def build_request(self, conversation_id: str, **fields: Any) -> SendMessageRequest:
        """Validate a message, with the connection's default sender number where none is given."""
        return _build(self.settings, conversation_id, fields)

    def send_message(
        self,
        conversation_id: str,
        *,
        channel: Channel | str,
        content: str,
        subject: str | None = None,
        html: str | None = None,
        from_phone_number_id: str | None = None,
        media_url: list[str] | None = None,
        idempotency_key: str | None = None,
    ) -> Message:
        """
        Send one message; validation runs before any request.

        A POST is repeated after a failure that may have created the message only when an
        ``idempotency_key`` is given: pass one wherever a retry must not send twice.
        """
        request = self.build_request(
            conversation_id, channel=channel, content=content, subject=subject, html=html,
            from_phone_number_id=from_phone_number_id, media_url=media_url,
        )  # fmt: skip
        return self.send_request(request, idempotency_key=idempotency_key)

    def send_request(self, request: SendMessageRequest, *, idempotency_key: str | None = None) -> Message:
        path, headers = create_call(request, idempotency_key)
        message = self._call("POST", path, json=request.to_body(), headers=headers)
        self.log.info(
            "Vantax message %s %s on %s (status %s).", message.id,
            "replayed (already sent under this Idempotency-Key)" if self._replayed else "created",
            request.channel, message.status,
        )  # fmt: skip
        return message

    def get_message(self, conversation_id: str, message_id: str) -> Message:
        """Read a message back, with its current delivery status."""
        return self._call("GET", message_path(conversation_id, message_id))

    async def asend_message(
        self,
        conversation_id: str,
        *,
        channel: Channel | str,
        content: str,
        subject: str | None = None,
        html: str | None = None,
        from_phone_number_id: str | None = None,
        media_url: list[str] | None = None,
        idempotency_key: str | None = None,
    ) -> Message:
        """Async twin of :meth:`send_message`."""
        request = _build(
            await self.aget_settings(), conversation_id, dict(channel=channel, content=content,
            subject=subject, html=html, from_phone_number_id=from_phone_number_id, media_url=media_url),
        )  # fmt: skip
        return await self.asend_request(request, idempotency_key=idempotency_key)

    async def asend_request(
        self,
        request: SendMessageRequest,
        *,
        idempotency_key: str | None = None,
        repeat_uncertain: bool = True,
    ) -> Message:
        """
        Send one validated message.

        ``repeat_uncertain=False`` does not repeat a failure that may have created the message,
        even with a key (for a service that does not deduplicate).
        """
        path, headers = create_call(request, idempotency_key)
        message = await self._acall(
            "POST", path, json=request.to_body(), headers=headers, _repeat_uncertain=repeat_uncertain
        )
        self.log.debug("Vantax message %s created (status %s).", message.id, message.status)
        return message

    async def aget_message(self, conversation_id: str, message_id: str) -> Message:
        """Async twin of :meth:`get_message`."""
        return await self._acall("GET", message_path(conversation_id, message_id))

    # -- waiting for a delivery status, sync and async -------------------------------------------

    def check_message_status(
        self,
        conversation_id: str,
        message_id: str,
        *,
        success_statuses: Iterable[str] | str | None = None,
        failure_statuses: Iterable[str] | str | None = None,
    ) -> DeliveryCheck:
        """
        Read a message once and judge its status: the single step of every wait (a sensor's poke).

        ``delivered`` is a success and ``failed`` a failure unless listed the other way; ``queued``
        and ``sent`` are pending; any other status is ``unknown`` (a wait fails closed on it).
        API errors are raised as they are.
        """
        message = self.get_message(conversation_id, message_id)
        return _judged(message_id, message, success_statuses, failure_statuses)

    async def acheck_message_status(
        self,
        conversation_id: str,
        message_id: str,
        *,
        success_statuses: Iterable[str] | str | None = None,
        failure_statuses: Iterable[str] | str | None = None,
    ) -> DeliveryCheck:
        """Async twin of :meth:`check_message_status`."""
        message = await self.aget_message(conversation_id, message_id)
        return _judged(message_id, message, success_statuses, failure_statuses)

    def wait_for_message_status(
        self,
        conversation_id: str,
        message_id: str,
        *,
        success_statuses: Iterable[str] | str | None = None,
        failure_statuses: Iterable[str] | str | None = None,
        timeout: float | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
    ) -> DeliveryCheck:
        """
        Poll in this process until the message is final or ``timeout`` seconds pass.

        Returns the last :meth:`check_message_status`, or a ``timeout`` check naming the last
        status; ``timeout`` None waits without limit.  Transient errors (5xx, 429, transport, a
        2xx without the envelope) are logged and polled through; other API errors are raised.
        """
        success, failure = status_set(success_statuses), status_set(failure_statuses)
        deadline = None if timeout is None else time.monotonic() + timeout
        poll = _Poll(
            self,
            message_id,
            poll_interval,
            timeout,
            lambda: None if deadline is None else deadline - time.monotonic(),
        )
        while True:
            try:
                step = poll.after(
                    self.check_message_status(
                        conversation_id, message_id, success_statuses=success, failure_statuses=failure
                    )
                )
            except TRANSIENT_ERRORS as exc:
                step = poll.after(exc)
            if isinstance(step, DeliveryCheck):
                return step
            time.sleep(step)

    async def await_message_status(
        self,
        conversation_id: str,
        message_id: str,
        *,
        success_statuses: Iterable[str] | str | None = None,
        failure_statuses: Iterable[str] | str | None = None,
        end_time: float | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
    ) -> DeliveryCheck:
        """
        Async twin of :meth:`wait_for_message_status`, for a trigger: it never raises an API error.

        ``end_time`` is a deadline in seconds since the epoch (what a trigger stores); None waits
        without one.  An API error that is not transient ends the wait with an ``error`` check
        carrying its text and the last status read.
        """
        success, failure = status_set(success_statuses), status_set(failure_statuses)
        poll = _Poll(
            self,
            message_id,
            poll_interval,
            None,
            lambda: None if end_time is None else end_time - time.time(),
        )
        while True:
            try:
                step = poll.after(
                    await self.acheck_message_status(
                        conversation_id, message_id, success_statuses=success, failure_statuses=failure
                    )
                )
            except TRANSIENT_ERRORS as exc:
                step = poll.after(exc)
            except VantaxError as exc:
                return DeliveryCheck(Outcome.ERROR, str(exc), poll.last)
            if isinstance(step, DeliveryCheck):
                return step
            await asyncio.sleep(step)

    def _ended(self, check: DeliveryCheck) -> DeliveryCheck:
        if check.outcome is Outcome.SUCCESS:
            self.log.info("%s", check.text)
        return check

    # -- many messages ----------------------------------------------------------------------

    async def asend_many(self, items: Iterable[BulkItem], **kwargs: Any) -> BulkProgress:
        """
        Send many validated messages concurrently through this hook's pacer and retries.

        ``items`` yields ``(index, request, idempotency_key)``; see
        :func:`vantax_provider.hooks._bulk.asend_many` for ``max_concurrency``, ``on_outcome``,
        ``on_tick`` and ``tick_interval``.
        """
        from vantax_provider.hooks._bulk import asend_many

        return await asend_many(self, items, **kwargs)

    def test_connection(self) -> tuple[bool, str]:
        """
        Check the base URL and the API key for the UI's Test button (see ``docs/connection.md``).

        It reads a message that does not exist, once without the key and once with it: the
        route must refuse the request without a key (401/403), so a base URL that does not lead
        to the API is not taken for an accepted key; with the key, a 404 in the API's JSON error
        envelope means the key was accepted.
        """
        try:
            return self._test_connection()
        except VantaxError as exc:
            return False, bound_text(self._scrubbed(str(exc)), 500)
        finally:
            self.close()

    def _scrubbed(self, text: str) -> str:
        return scrub(text, self._settings) if self._settings is not None else text

    def _test_connection(self) -> tuple[bool, str]:
        from vantax_provider.exceptions import VantaxAuthenticationError, VantaxNotFoundError

        probe = "airflow-connection-test"
        path = message_path(probe, probe)
        client, settings = self.get_conn(), self.settings
        request = client.build_request("GET", path)
        del request.headers["Authorization"]
        try:
            status = client.send(request).status_code
        except transport_errors() as exc:
            raise transport_error(exc, "GET", path, settings) from None
        if status not in (401, 403):
            return False, (
                f"The base URL {settings.base_url} does not look like the Vantax API: a request "
                f"without the API key to {settings.base_url + path} was answered {status}, not 401/403."
            )
        try:
            self.get_message(probe, probe)
        except VantaxNotFoundError as exc:
            if exc.api_message is None:
                return False, (
                    f"The base URL {settings.base_url} answered 404 without the Vantax JSON error "
                    "envelope: check the base URL."
                )
            return True, "Connection to Vantax succeeded: the API key was accepted."
        except VantaxAuthenticationError:
            return False, "Vantax refused the API key (401/403)."
        return True, "Connection to Vantax succeeded."

    # -- the one retry loop, sync and async ---------------------------------------------------

    def _call(self, method: str, path: str, **kwargs: Any) -> Message:
        client = self.get_conn()
        settings = self.settings
        attempt = Attempts(self.log, settings.retry, method, path, idempotent=has_idempotency_key(kwargs))
        while True:
            try:
                response = client.request(method, path, **kwargs)
                outcome = read_answer(response, method, path, settings)
            except transport_errors() as exc:
                outcome = transport_error(exc, method, path, settings)
            if not isinstance(outcome, VantaxError):
                # A 200 with Idempotent-Replayed answers a POST the service had already created.
                self._replayed = response.headers.get("Idempotent-Replayed", "").lower() == "true"
                return outcome
            time.sleep(attempt.wait_or_raise(outcome))

    async def _acall(
        self, method: str, path: str, *, _repeat_uncertain: bool = True, **kwargs: Any
    ) -> Message:
        settings = await self.aget_settings()
        self.pacer.set_account_limit(settings.rate_limit, settings.rate_limit_share)
        idempotent = _repeat_uncertain and has_idempotency_key(kwargs)
        attempt = Attempts(self.log, settings.retry, method, path, idempotent=idempotent)
        while True:
            # The client first: making one (TLS context, pool) takes milliseconds that would
            # otherwise land between the paced start and the request, bunching the first sends.
            client = await self.get_async_conn()
            await self.pacer.acquire()
            try:
                outcome = read_answer(await client.request(method, path, **kwargs), method, path, settings)
            except transport_errors() as exc:
                outcome = transport_error(exc, method, path, settings)
            if not isinstance(outcome, VantaxError):
                self.pacer.on_success()
                return outcome
            rate_limited = isinstance(outcome, VantaxRateLimitError)
            if rate_limited:
                self.pacer.on_rate_limited()  # the account's share adapts (AIMD), see _pacing
            wait = attempt.wait_or_raise(outcome)
            if rate_limited and self.pacer.adaptive is None:
                self.pacer.pause_for(wait)  # no account limit known: every request of this hook waits
            else:
                # With the account's limit known, the cut share already slows the others down;
                # pausing them too for a whole-second Retry-After would leave the budget unused.
                await asyncio.sleep(wait)

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        from vantax_provider.get_provider_info import UI_FIELD_BEHAVIOUR

        return {k.replace("-", "_"): v for k, v in UI_FIELD_BEHAVIOUR.items()}

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        from vantax_provider.hooks._form import connection_form_widgets

        return connection_form_widgets()


class _Poll:
    """One wait's ladder, shared by the sync and async loops: what a read means and how long to sleep."""

    def __init__(
        self,
        hook: VantaxHook,
        message_id: str,
        poll_interval: float,
        timeout: float | None,
        remaining: Callable[[], float | None],
    ) -> None:
        self.hook, self.message_id, self.poll_interval = hook, message_id, poll_interval
        self.timeout, self.remaining = timeout, remaining  # ``timeout`` only names the wait's length
        self.last: str | None = None

    def after(self, read: DeliveryCheck | VantaxError) -> DeliveryCheck | float:
        """The final check, or the seconds to sleep before the next read (a transient error polls on)."""
        if isinstance(read, VantaxError):
            self.hook.log.warning(
                "Reading Vantax message %s failed, polling again: %s", self.message_id, read
            )
        else:
            self.last = read.status
            if read.outcome is not Outcome.PENDING:
                return self.hook._ended(read)
        remaining = self.remaining()
        if remaining is not None and remaining <= 0:
            text = timeout_text(self.message_id, self.last, self.timeout)
            return DeliveryCheck(Outcome.TIMEOUT, text, self.last)
        return self.poll_interval if remaining is None else min(self.poll_interval, max(remaining, 0.0))


def _judged(
    message_id: str,
    message: Message,
    success_statuses: Iterable[str] | str | None,
    failure_statuses: Iterable[str] | str | None,
) -> DeliveryCheck:
    success, failure = status_set(success_statuses), status_set(failure_statuses)
    outcome, text = judge(message_id, message.status, success, failure)
    return DeliveryCheck(outcome, text, message.status, message)


def _build(settings: VantaxSettings, conversation_id: str, fields: dict[str, Any]) -> SendMessageRequest:
    channel = fields.get("channel")
    if (
        not fields.get("from_phone_number_id")
        and settings.default_from_phone_number_id
        and isinstance(channel, str)
        and channel.strip().lower() in {c.value for c in PHONE_CHANNELS}
    ):
        fields = {**fields, "from_phone_number_id": settings.default_from_phone_number_id}
    return build_send_request(conversation_id=conversation_id, **fields)


async def _get_connection_async(hook: VantaxHook) -> Connection:
    """The hook's connection, looked up without blocking the event loop.

    Airflow's async lookup misses a connection stored in the metadata DB (``airflow connections
    add``) when a trigger runs in-process under ``airflow dags test`` (3.3.2): its in-process
    supervisor channel has no async request, so the lookup ends in "isn't defined".  A not-found
    answer is therefore asked again through the synchronous lookup, in a worker thread, which
    goes through the same secrets backends and masks the same secrets.
    """
    from asgiref.sync import sync_to_async

    getter: Callable[..., Any] = sync_to_async(hook.get_connection)
    try:
        from airflow.providers.common.compat.connection import get_async_connection
    except ImportError:  # pragma: no cover - older common-compat provider
        conn: Connection = await getter(hook.vantax_conn_id)
        return conn
    try:
        from airflow.sdk.exceptions import AirflowNotFoundException
    except ImportError:  # Airflow < 3.2 keeps it in core
        from airflow.exceptions import AirflowNotFoundException  # type: ignore[attr-defined]

    try:
        return await get_async_connection(hook.vantax_conn_id, hook=hook)
    except AirflowNotFoundException:
        hook.log.debug("The async lookup did not find %r; asking the sync lookup.", hook.vantax_conn_id)
        conn = await getter(hook.vantax_conn_id)
        return conn
