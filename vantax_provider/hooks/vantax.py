"""The Vantax hook: the public API over the connection, its HTTP transport (``_transport``) and its waits."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, cast

from airflow.sdk.bases.hook import BaseHook

from vantax_provider._arguments import finite_number
from vantax_provider._compat import AirflowNotFoundException, metastore_connection
from vantax_provider.contract import DEFAULT_CONN_ID
from vantax_provider.defaults import DEFAULT_POLL_INTERVAL
from vantax_provider.exceptions import VantaxError, bound_text
from vantax_provider.hooks._pacing import AsyncPacer
from vantax_provider.hooks._probe import probe
from vantax_provider.hooks._scrub import scrub
from vantax_provider.hooks._settings import (
    VantaxSettings,
    aget_connection,
    amask_api_key,
    check_connections,
    check_overrides,
    check_rate_limit,
    mask_api_key,
    request_with_defaults,
    settings_from_connection,
)
from vantax_provider.hooks._transport import Transport
from vantax_provider.hooks._waiting import Poll, judged
from vantax_provider.hooks._wire import create_call, message_path, path_segment
from vantax_provider.models import (
    Channel,
    DeliveryCheck,
    Message,
    SendMessageRequest,
)
from vantax_provider.status import status_set

if TYPE_CHECKING:
    import httpx
    from airflow.sdk import Connection

__all__ = ["VantaxHook"]

NO_API_KEY_ANSWER = (
    "No API key: the password field (API key) is empty. Paste your Vantax API key there; "
    'a connection added with --conn-password "$VANTAX_API_KEY" gets an empty one when that '
    "variable is not set."
)


class VantaxHook(BaseHook):
    """
    Talks to the Vantax messages API.

    One pooled client is kept per hook (sync and async each), retries happen here and nowhere
    else, and every failure is raised as a :class:`~vantax_provider.exceptions.VantaxError`.

    :param vantax_conn_id: the Airflow connection: API key in the password, base URL in the host,
        extras ``timeout``, ``connect_timeout``, ``max_retries``, ``retry_backoff`` (first backoff,
        seconds), ``max_retry_after``, ``max_retry_time``, ``default_from_phone_number_id``,
        ``dashboard_url``, ``proxy`` (proxies are never read from the environment; with an https
        base URL only, unless ``allow_plain_http_proxy`` names a loopback proxy), ``rate_limit``
        (the account's requests per second, all tasks together: async sends and status reads adapt
        to it, see docs/scale.md) and ``rate_limit_share``.
    :param timeout: seconds to wait for a whole answer (a deadline, not per read); overrides the
        connection's ``timeout`` extra.
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
        self._timeout, self._max_retries = check_overrides(timeout, max_retries)
        self.pacer = AsyncPacer(check_rate_limit(rate_limit))
        self._settings: VantaxSettings | None = None
        self._transport = Transport(check_connections(max_connections), self.pacer, self.log)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vantax_conn_id={self.vantax_conn_id!r})"

    # -- connection -------------------------------------------------------------------------

    @classmethod
    def get_connection(cls, conn_id: str) -> Connection:
        """
        The connection, through the task SDK; under ``airflow dags test``, a DAG callback's lookup
        also reads the metadata DB (see ``_compat.metastore_connection``).
        """
        try:
            return super().get_connection(conn_id)
        except AirflowNotFoundException:
            found = metastore_connection(conn_id)
            if found is None:
                raise
            return cast("Connection", found)

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
            conn = await aget_connection(self.vantax_conn_id, self)
            settings = self._apply_overrides(settings_from_connection(conn))
            await amask_api_key(settings.api_key)
            if settings.proxy:
                await amask_api_key(settings.proxy)
            self._settings = settings
        return self._settings

    def get_conn(self) -> httpx.Client:
        """The pooled sync client, created on first use."""
        return self._transport.sync(self.settings)

    async def get_async_conn(self) -> httpx.AsyncClient:
        """
        An async client of the running event loop, created on first use: the hook's connections
        are spread over several small pools, taken in turn (see ``hooks/_transport.py``).
        """
        return self._transport.next_async(await self.aget_settings())

    def close(self) -> None:
        self._transport.close()

    async def aclose(self) -> None:
        await self._transport.aclose()

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
        return request_with_defaults(self.settings, conversation_id, fields)

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
        message = self._transport.call(self.settings, "POST", path, json=request.to_body(), headers=headers)
        self.log.info(
            "Vantax message %s %s on %s (status %s).", message.id,
            "replayed (already sent under this Idempotency-Key)" if self._transport.replayed else "created",
            request.channel, message.status,
        )  # fmt: skip
        return message

    def get_message(self, conversation_id: str, message_id: str) -> Message:
        """Read a message back, with its current delivery status."""
        return self._transport.call(self.settings, "GET", message_path(conversation_id, message_id))

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
        request = request_with_defaults(
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
        message = await self._transport.acall(
            await self.aget_settings(), "POST", path, json=request.to_body(), headers=headers,
            repeat_uncertain=repeat_uncertain,
        )  # fmt: skip
        self.log.debug("Vantax message %s created (status %s).", message.id, message.status)
        return message

    async def aget_message(self, conversation_id: str, message_id: str) -> Message:
        """Async twin of :meth:`get_message`."""
        return await self._transport.acall(
            await self.aget_settings(), "GET", message_path(conversation_id, message_id)
        )

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
        return judged(message_id, message, success_statuses, failure_statuses)

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
        return judged(message_id, message, success_statuses, failure_statuses)

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
        poll = Poll(
            self.log, message_id, poll_interval, timeout,  # checked there: finite, not negative
            lambda: None if deadline is None else deadline - time.monotonic(),
        )  # fmt: skip
        deadline = None if timeout is None else time.monotonic() + timeout
        return poll.wait(
            lambda: self.check_message_status(
                conversation_id, message_id, success_statuses=success, failure_statuses=failure
            )
        )

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
        end_time = None if end_time is None else finite_number(end_time, "end_time")
        poll = Poll(
            self.log, message_id, poll_interval, None,
            lambda: None if end_time is None else end_time - time.time(),
        )  # fmt: skip
        return await poll.await_(
            lambda: self.acheck_message_status(
                conversation_id, message_id, success_statuses=success, failure_statuses=failure
            )
        )

    def test_connection(self) -> tuple[bool, str]:
        """
        Check the base URL and the API key for the UI's Test button (see ``docs/connection.md``).

        It reads a message that does not exist without a key, with a made-up key, with the key,
        and reads a path that is no API route with the key: the first two must be refused, the
        third answered 404 in the API's error envelope, and the fourth answered otherwise than
        the third, or the base URL is not proven.  No request is repeated, the whole test has a
        time budget (``_probe.PROBE_SECONDS``), and nothing is sent.  An empty API key is named as
        such before any request: Airflow tests the form under a made-up conn_id, which the
        connection's own error would quote.
        """
        try:
            if not (self.get_connection(self.vantax_conn_id).password or "").strip():
                return False, NO_API_KEY_ANSWER
            return probe(self.get_conn(), self.settings)
        except VantaxError as exc:
            return False, bound_text(self._scrubbed(str(exc)), 500)
        finally:
            self.close()

    def _scrubbed(self, text: str) -> str:
        return scrub(text, self._settings) if self._settings is not None else text

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        from vantax_provider.get_provider_info import UI_FIELD_BEHAVIOUR

        return {k.replace("-", "_"): v for k, v in UI_FIELD_BEHAVIOUR.items()}

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        from vantax_provider.hooks._form import connection_form_widgets

        return connection_form_widgets()
