"""Requests and answers on the wire: paths, headers, error mapping and the retry decision."""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from vantax_provider import contract
from vantax_provider.exceptions import (
    FieldError,
    VantaxError,
    VantaxRateLimitError,
    VantaxResponseError,
    VantaxTransportError,
    VantaxValidationError,
    error_for_status,
)
from vantax_provider.hooks._retry import RetryPolicy, is_retryable, parse_retry_after

if TYPE_CHECKING:
    import httpx

    from vantax_provider.hooks._settings import VantaxSettings
    from vantax_provider.models import SendMessageRequest


def path_segment(value: str) -> str:
    """Percent-encode an id as one path segment; dots too, so ``..`` cannot climb the path."""
    return quote(value, safe="").replace(".", "%2E")


def create_call(request: SendMessageRequest, idempotency_key: str | None) -> tuple[str, dict[str, str]]:
    path = contract.MESSAGES_PATH.format(conversation_id=path_segment(request.conversation_id))
    if idempotency_key is None:
        return path, {}
    if not (0 < len(idempotency_key) <= 255 and idempotency_key.isascii() and idempotency_key.isprintable()):
        raise VantaxValidationError(
            [FieldError("idempotency_key", "must be 1 to 255 printable ASCII characters")]
        )
    return path, {contract.IDEMPOTENCY_HEADER: idempotency_key}


def message_path(conversation_id: str, message_id: str) -> str:
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


def transport_errors() -> type[Exception]:
    import httpx

    return httpx.TransportError


def transport_error(exc: Exception, method: str, path: str, settings: VantaxSettings) -> VantaxError:
    import httpx

    # Refused or never connected: the request cannot have reached the server.
    not_sent = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
    kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
    error = VantaxTransportError(
        f"Vantax {method} {path} at {settings.base_url} {kind}: "
        f"{type(exc).__name__}: {_scrub(str(exc), settings)}",
        maybe_sent=not not_sent,
        method=method,
        path=path,
    )
    error.__cause__ = exc
    return error


def read_answer(
    response: httpx.Response, method: str, path: str, settings: VantaxSettings
) -> dict[str, Any] | VantaxError:
    """The message payload of a success envelope, or the error that describes the answer."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    api_message = body.get("message") if isinstance(body, dict) else None
    api_message = _scrub(str(api_message), settings) if api_message is not None else None
    where: dict[str, Any] = {
        "status_code": status,
        "method": method,
        "path": path,
        "api_message": api_message,
    }
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


class _Log(Protocol):
    def warning(self, event: str, *args: Any) -> Any: ...


class Attempts:
    """Counts attempts of one call and decides, by the retry policy, whether and when to repeat."""

    def __init__(self, log: _Log, policy: RetryPolicy, method: str, path: str, *, idempotent: bool) -> None:
        self.log = log
        self.policy = policy
        self.method = method
        self.path = path
        self.idempotent = idempotent
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
            wait = error.retry_after * (1 + 0.1 * random.random())
        if time.monotonic() - self.started + wait > self.policy.max_total:
            raise error
        self.retries += 1
        self.log.warning(
            "Vantax %s %s failed (%s); retry %d/%d in %.2fs.",
            self.method, self.path, _short(error), self.retries, self.policy.max_retries, wait,
        )  # fmt: skip
        return wait


def _short(error: VantaxError) -> str:
    if error.status_code is not None:
        return f"HTTP {error.status_code}"
    return type(error.__cause__).__name__ if error.__cause__ else type(error).__name__


def has_idempotency_key(kwargs: dict[str, Any]) -> bool:
    return contract.IDEMPOTENCY_HEADER in (kwargs.get("headers") or {})
