"""The Vantax hook: the connection, pooled sync and async HTTP clients, retries and typed errors."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from airflow.sdk.bases.hook import BaseHook

from vantax_provider import __version__, contract
from vantax_provider.exceptions import (
    FieldError,
    VantaxConfigurationError,
    VantaxError,
    VantaxRateLimitError,
    VantaxResponseError,
    VantaxTransportError,
    VantaxValidationError,
    error_for_status,
)
from vantax_provider.hooks._pacing import AsyncPacer
from vantax_provider.hooks._retry import RetryPolicy, is_retryable, parse_retry_after
from vantax_provider.models import PHONE_CHANNELS, Channel, Message, SendMessageRequest, build_send_request

if TYPE_CHECKING:
    import httpx
    from airflow.sdk import Connection

DEFAULT_TIMEOUT = 30.0
DEFAULT_CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True)
class VantaxSettings:
    """What the hook reads from its Airflow connection.  The key is kept out of ``repr``."""

    base_url: str
    api_key: str = field(repr=False)
    timeout: float = DEFAULT_TIMEOUT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    retry: RetryPolicy = RetryPolicy()
    default_from_phone_number_id: str | None = None
    dashboard_url: str | None = None


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def normalise_base_url(host: str | None, schema: str | None = None, port: int | None = None) -> str:
    """The base URL from a connection's host; plain http is refused except on loopback."""
    raw = (host or "").strip() or contract.DEFAULT_BASE_URL
    if "://" not in raw:
        raw = f"{schema or 'https'}://{raw}"
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise VantaxConfigurationError(f"The Vantax base URL {raw!r} is not an absolute http(s) URL.")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise VantaxConfigurationError("The Vantax base URL must not carry credentials, a query or fragment.")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise VantaxConfigurationError(
            f"Refusing plain http to {parts.hostname!r}: the API key would travel unencrypted. "
            "Use https (plain http is allowed for loopback hosts only, such as the local emulator)."
        )
    netloc = parts.netloc if port is None or parts.port else f"{parts.netloc}:{port}"
    return f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}"


def path_segment(value: str) -> str:
    """Percent-encode an id as one path segment; dots too, so ``..`` cannot climb the path."""
    return quote(value, safe="").replace(".", "%2E")


def _number(extra: dict[str, Any], name: str, default: float, *, minimum: float = 0) -> float:
    value = extra.get(name)
    if value in (None, ""):
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise VantaxConfigurationError(f"Connection extra {name!r} must be a number, got {value!r}.") from None
    if number < minimum:
        raise VantaxConfigurationError(f"Connection extra {name!r} must be at least {minimum}.")
    return number


def settings_from_connection(conn: Connection) -> VantaxSettings:
    """Read and check a Vantax connection."""
    if not conn.password:
        raise VantaxConfigurationError(
            f"The Vantax connection {conn.conn_id!r} has no API key: put it in the password field."
        )
    extra = conn.extra_dejson or {}
    retry = RetryPolicy(
        max_retries=int(_number(extra, "max_retries", RetryPolicy.max_retries)),
        max_retry_after=_number(extra, "max_retry_after", RetryPolicy.max_retry_after),
        max_total=_number(extra, "max_retry_time", RetryPolicy.max_total),
    )
    return VantaxSettings(
        base_url=normalise_base_url(conn.host, conn.schema, conn.port),
        api_key=conn.password,
        timeout=_number(extra, "timeout", DEFAULT_TIMEOUT, minimum=0.001),
        connect_timeout=_number(extra, "connect_timeout", DEFAULT_CONNECT_TIMEOUT, minimum=0.001),
        retry=retry,
        default_from_phone_number_id=extra.get("default_from_phone_number_id") or None,
        dashboard_url=extra.get("dashboard_url") or None,
    )


class VantaxHook(BaseHook):
    """
    Talks to the Vantax messages API.

    One pooled client is kept per hook (sync and async each), retries happen here and nowhere
    else, and every failure is raised as a :class:`~vantax_provider.exceptions.VantaxError`.

    :param vantax_conn_id: the Airflow connection: API key in the password, base URL in the host,
        extras ``timeout``, ``connect_timeout``, ``max_retries``, ``max_retry_after``,
        ``max_retry_time``, ``default_from_phone_number_id`` and ``dashboard_url``.
    :param timeout: read timeout in seconds; overrides the connection's ``timeout`` extra.
    :param max_retries: overrides the connection's ``max_retries`` extra.
    :param rate_limit: most async requests started per second by this hook; None for no limit.
    :param max_connections: size of the connection pool.
    """

    conn_name_attr = "vantax_conn_id"
    default_conn_name = "vantax_default"
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
        self._aclient: httpx.AsyncClient | None = None
        self._aclient_loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vantax_conn_id={self.vantax_conn_id!r})"

    # -- connection -------------------------------------------------------------------------

    def _apply_overrides(self, settings: VantaxSettings) -> VantaxSettings:
        from dataclasses import replace

        if self._timeout is not None:
            settings = replace(settings, timeout=self._timeout)
        if self._max_retries is not None:
            settings = replace(settings, retry=replace(settings.retry, max_retries=self._max_retries))
        _mask(settings.api_key)
        return settings

    @property
    def settings(self) -> VantaxSettings:
        if self._settings is None:
            conn = self.get_connection(self.vantax_conn_id)
            self._settings = self._apply_overrides(settings_from_connection(conn))
        return self._settings

    async def aget_settings(self) -> VantaxSettings:
        if self._settings is None:
            conn = await _get_connection_async(self)
            self._settings = self._apply_overrides(settings_from_connection(conn))
        return self._settings

    def _client_kwargs(self, settings: VantaxSettings) -> dict[str, Any]:
        import httpx

        return {
            "base_url": settings.base_url,
            "timeout": httpx.Timeout(settings.timeout, connect=settings.connect_timeout),
            "headers": {
                "Authorization": f"Bearer {settings.api_key}",
                "User-Agent": f"airflow-provider-vantax/{__version__}",
                "Accept": "application/json",
            },
            "limits": httpx.Limits(
                max_connections=self._max_connections, max_keepalive_connections=self._max_connections
            ),
            "follow_redirects": False,
        }

    def get_conn(self) -> httpx.Client:
        """The pooled sync client, created on first use."""
        import httpx

        if self._client is None:
            self._client = httpx.Client(**self._client_kwargs(self.settings))
        return self._client

    async def get_async_conn(self) -> httpx.AsyncClient:
        """The pooled async client of the running event loop, created on first use."""
        import httpx

        loop = asyncio.get_running_loop()
        if self._aclient is None or self._aclient_loop is not loop:
            # A client is bound to the loop it first ran on; asyncio.run() makes a new loop.
            self._aclient = httpx.AsyncClient(**self._client_kwargs(await self.aget_settings()))
            self._aclient_loop = loop
        return self._aclient

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        if self._aclient is not None:
            await self._aclient.aclose()
            self._aclient = None
            self._aclient_loop = None

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
        path, headers = _create_call(request, idempotency_key)
        data = self._call("POST", path, json=request.to_body(), headers=headers)
        message = Message.model_validate(data)
        self.log.info("Vantax message %s created on %s (status %s).", message.id, request.channel, message.status)
        return message

    def get_message(self, conversation_id: str, message_id: str) -> Message:
        """Read a message back, with its current delivery status."""
        return Message.model_validate(self._call("GET", _message_path(conversation_id, message_id)))

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
        self, request: SendMessageRequest, *, idempotency_key: str | None = None
    ) -> Message:
        path, headers = _create_call(request, idempotency_key)
        data = await self._acall("POST", path, json=request.to_body(), headers=headers)
        message = Message.model_validate(data)
        self.log.debug("Vantax message %s created (status %s).", message.id, message.status)
        return message

    async def aget_message(self, conversation_id: str, message_id: str) -> Message:
        """Async twin of :meth:`get_message`."""
        return Message.model_validate(await self._acall("GET", _message_path(conversation_id, message_id)))

    def test_connection(self) -> tuple[bool, str]:
        """
        Check the base URL and the API key for the UI's Test button.

        It reads a message that does not exist: 404 means the key was accepted (the service
        is assumed to check the key before looking the message up).
        """
        from vantax_provider.exceptions import VantaxAuthenticationError, VantaxNotFoundError

        try:
            self.get_message("airflow-connection-test", "airflow-connection-test")
        except VantaxNotFoundError:
            return True, "Connection to Vantax succeeded: the API key was accepted."
        except VantaxAuthenticationError:
            return False, "Vantax refused the API key (401/403)."
        except VantaxError as exc:
            return False, str(exc)
        finally:
            self.close()
        return True, "Connection to Vantax succeeded."

    # -- the one retry loop, sync and async ---------------------------------------------------

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        client = self.get_conn()
        attempt = _Attempts(self, self.settings.retry, method, path, idempotent=_has_key(kwargs))
        while True:
            try:
                outcome = _read(client.request(method, path, **kwargs), method, path, self.settings)
            except _transport_errors() as exc:
                outcome = _transport_error(exc, method, path, self.settings)
            if isinstance(outcome, dict):
                return outcome
            time.sleep(attempt.wait_or_raise(outcome))

    async def _acall(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        client = await self.get_async_conn()
        settings = await self.aget_settings()
        attempt = _Attempts(self, settings.retry, method, path, idempotent=_has_key(kwargs))
        while True:
            await self.pacer.acquire()
            try:
                outcome = _read(await client.request(method, path, **kwargs), method, path, settings)
            except _transport_errors() as exc:
                outcome = _transport_error(exc, method, path, settings)
            if isinstance(outcome, dict):
                return outcome
            wait = attempt.wait_or_raise(outcome)
            if isinstance(outcome, VantaxRateLimitError):
                self.pacer.pause_for(wait)  # every request of this hook waits, not just this one
            else:
                await asyncio.sleep(wait)

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        from vantax_provider.get_provider_info import UI_FIELD_BEHAVIOUR

        return {k.replace("-", "_"): v for k, v in UI_FIELD_BEHAVIOUR.items()}

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        from vantax_provider.hooks._form import connection_form_widgets

        return connection_form_widgets()


class _Attempts:
    """Counts attempts of one call and decides, by the retry policy, whether and when to repeat."""

    def __init__(self, hook: VantaxHook, policy: RetryPolicy, method: str, path: str, *, idempotent: bool) -> None:
        self.hook, self.policy, self.method, self.path, self.idempotent = hook, policy, method, path, idempotent
        self.retries = 0
        self.started = time.monotonic()

    def wait_or_raise(self, error: VantaxError) -> float:
        if not is_retryable(error, method=self.method, idempotent=self.idempotent):
            raise error
        if self.retries >= self.policy.max_retries:
            raise error
        wait = self.policy.backoff(self.retries)
        if isinstance(error, VantaxRateLimitError) and error.retry_after is not None:
            if error.retry_after > self.policy.max_retry_after:
                raise error  # longer than we may wait: the caller decides (e.g. Airflow's retry)
            wait = error.retry_after * (1 + 0.1 * _jitter())
        if time.monotonic() - self.started + wait > self.policy.max_total:
            raise error
        self.retries += 1
        self.hook.log.warning(
            "Vantax %s %s failed (%s); retry %d/%d in %.2fs.",
            self.method, self.path, _short(error), self.retries, self.policy.max_retries, wait,
        )  # fmt: skip
        return wait


def _jitter() -> float:
    import random

    return random.random()


def _short(error: VantaxError) -> str:
    if error.status_code is not None:
        return f"HTTP {error.status_code}"
    return type(error.__cause__).__name__ if error.__cause__ else type(error).__name__


def _has_key(kwargs: dict[str, Any]) -> bool:
    return contract.IDEMPOTENCY_HEADER in (kwargs.get("headers") or {})


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


def _create_call(request: SendMessageRequest, idempotency_key: str | None) -> tuple[str, dict[str, str]]:
    path = contract.MESSAGES_PATH.format(conversation_id=path_segment(request.conversation_id))
    if idempotency_key is None:
        return path, {}
    if not (0 < len(idempotency_key) <= 255 and idempotency_key.isascii() and idempotency_key.isprintable()):
        raise VantaxValidationError([FieldError("idempotency_key", "must be 1 to 255 printable ASCII characters")])
    return path, {contract.IDEMPOTENCY_HEADER: idempotency_key}


def _message_path(conversation_id: str, message_id: str) -> str:
    from vantax_provider.models import check_id

    errors = []
    for name, value in (("conversation_id", conversation_id), ("message_id", message_id)):
        try:
            check_id(value)
        except ValueError as exc:  # PydanticCustomError is a ValueError
            errors.append(FieldError(name, str(exc)))
    if errors:
        raise VantaxValidationError(errors)
    return contract.MESSAGE_PATH.format(
        conversation_id=path_segment(conversation_id), message_id=path_segment(message_id)
    )


def _transport_errors() -> type[Exception]:
    import httpx

    return httpx.TransportError


def _transport_error(exc: Exception, method: str, path: str, settings: VantaxSettings) -> VantaxError:
    import httpx

    # Refused or never connected: the request cannot have reached the server.
    not_sent = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
    kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
    error = VantaxTransportError(
        f"Vantax {method} {path} at {settings.base_url} {kind}: {type(exc).__name__}: {_scrub(str(exc), settings)}",
        maybe_sent=not not_sent,
        method=method,
        path=path,
    )
    error.__cause__ = None
    return error


def _read(response: httpx.Response, method: str, path: str, settings: VantaxSettings) -> dict[str, Any] | VantaxError:
    """The message payload of a success envelope, or the error that describes the answer."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    api_message = body.get("message") if isinstance(body, dict) else None
    api_message = _scrub(str(api_message), settings) if api_message is not None else None
    where: dict[str, Any] = {"status_code": status, "method": method, "path": path, "api_message": api_message}
    if 200 <= status < 300:
        data = body.get("data") if isinstance(body, dict) and body.get("success") is True else None
        if isinstance(data, dict) and "id" in data:
            return data
        return VantaxResponseError("Vantax answered without the documented JSON envelope.", **where)
    cls = error_for_status(status)
    text = f"Vantax refused the request ({cls.__name__.removeprefix('Vantax').removesuffix('Error')})."
    if not isinstance(body, dict):
        text += " The answer was not the documented JSON envelope."
    if cls is VantaxRateLimitError:
        retry_after = parse_retry_after(response.headers.get(contract.RETRY_AFTER_HEADER))
        if retry_after is not None:
            text += f" Retry after {retry_after:.0f}s."
        return VantaxRateLimitError(text, retry_after=retry_after, **where)
    return cls(text, **where)


def _scrub(text: str, settings: VantaxSettings) -> str:
    return text.replace(settings.api_key, "***") if settings.api_key else text


def _mask(secret: str) -> None:
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # pragma: no cover - older task SDKs
        return
    mask_secret(secret)


async def _get_connection_async(hook: VantaxHook) -> Connection:
    try:
        from airflow.providers.common.compat.connection import get_async_connection
    except ImportError:  # pragma: no cover - older common-compat provider
        from asgiref.sync import sync_to_async

        getter: Callable[..., Any] = sync_to_async(hook.get_connection)
        conn: Connection = await getter(hook.vantax_conn_id)
        return conn
    return await get_async_connection(hook.vantax_conn_id, hook=hook)
