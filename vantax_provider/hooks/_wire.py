"""Requests and answers on the wire: paths, headers, error mapping and the retry decision."""

from __future__ import annotations

import base64
import json
import random
import time
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, quote_plus, urlsplit

from vantax_provider import contract
from vantax_provider.exceptions import (
    FieldError,
    VantaxError,
    VantaxRateLimitError,
    VantaxRequestError,
    VantaxResponseError,
    VantaxTransportError,
    VantaxValidationError,
    bound_text,
    error_for_status,
)
from vantax_provider.hooks._retry import RetryPolicy, is_retryable, parse_retry_after

if TYPE_CHECKING:
    import httpx

    from vantax_provider.hooks._settings import VantaxSettings
    from vantax_provider.models import Message, SendMessageRequest


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


def transport_errors() -> tuple[type[Exception], ...]:
    """What a request may raise below the hook: transport failures, and requests httpx cannot build."""
    import httpx

    return (httpx.TransportError, httpx.InvalidURL, UnicodeError)


class ScrubbedCause(Exception):
    """The type and scrubbed text of a library exception whose own text held a secret."""


def transport_error(exc: Exception, method: str, path: str, settings: VantaxSettings) -> VantaxError:
    import httpx

    url = settings.base_url + path
    summary = f"{type(exc).__name__}: {scrub(str(exc), settings)}"
    if isinstance(exc, (httpx.LocalProtocolError, httpx.InvalidURL, httpx.UnsupportedProtocol, UnicodeError)):
        # httpx refused to build or send the request: nothing went out, and a repeat fails alike.
        error: VantaxError = VantaxRequestError(
            f"Vantax {method} {url} could not be sent; nothing was sent: {bound_text(summary)}",
            method=method, path=path, url=url,
        )  # fmt: skip
    else:
        # Refused or never connected: the request cannot have reached the server.
        not_sent = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
        kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
        error = VantaxTransportError(
            f"Vantax {method} {url} {kind}: {bound_text(summary)}",
            maybe_sent=not not_sent, method=method, path=path, url=url,
        )  # fmt: skip
    # The library's exception is chained only when no form of a secret is in its text.
    error.__cause__ = exc if not holds_secret(_exception_text(exc), settings) else ScrubbedCause(summary)
    error.__suppress_context__ = True
    return error


def _exception_text(exc: BaseException) -> str:
    return f"{exc} {exc.args!r}"


def read_answer(
    response: httpx.Response, method: str, path: str, settings: VantaxSettings
) -> Message | VantaxError:
    """The message of a success envelope, or the error that describes the answer."""
    status = response.status_code
    try:
        body = response.json()
    except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes
        body = None
    api_message = body.get("message") if isinstance(body, dict) else None
    api_message = bound_text(scrub(str(api_message), settings)) if api_message is not None else None
    where: dict[str, Any] = {
        "status_code": status,
        "method": method,
        "path": path,
        "url": settings.base_url + path,
        "api_message": api_message,
    }
    if 200 <= status < 300:
        data = body.get("data") if isinstance(body, dict) and body.get("success") is True else None
        if not isinstance(data, dict) or "id" not in data:
            return VantaxResponseError("Vantax answered without the documented JSON envelope.", **where)
        return _message(data, method, where)
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


def _message(data: dict[str, Any], method: str, where: dict[str, Any]) -> Message | VantaxError:
    """
    The ``Message`` in a 2xx answer.  A create answer with a usable string id counts as created
    even when other fields do not fit (they are dropped); anything else that does not fit is a
    :class:`VantaxResponseError` that names the fields, never their values.
    """
    from pydantic import ValidationError

    from vantax_provider.models import Message

    try:
        return Message.model_validate(data)
    except ValidationError as exc:
        fields = sorted(
            {".".join(str(p) for p in e["loc"]) or "data" for e in exc.errors(include_input=False)}
        )
    if method == "POST":
        lenient = Message.lenient(data)
        if lenient is not None:
            return lenient
    return VantaxResponseError(
        bound_text(f"Vantax answered with a message that does not fit the documented model "
                   f"(field(s) {', '.join(fields)}).", 200),
        **where,
    )  # fmt: skip


def secret_forms(secret: str) -> tuple[str, ...]:
    """Every form of a secret that could show in a text: plain, escaped, bytes repr, URL and base64."""
    return _secret_forms(secret)


@lru_cache(maxsize=16)
def _secret_forms(secret: str) -> tuple[str, ...]:
    raw = secret.encode("utf-8", "backslashreplace")
    forms = {
        secret,
        repr(secret)[1:-1],
        json.dumps(secret)[1:-1],
        repr(raw)[2:-1],
        quote(secret, safe=""),
        quote_plus(secret),
    }
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        for pad in range(3):  # the three alignments of the key inside a longer encoded text
            encoded = encode(b"\0" * pad + raw).decode("ascii").rstrip("=")
            core = encoded[4 if pad else 0 : -4 if len(encoded) > 8 else None]
            if len(core) >= 8:
                forms.add(core)
    return tuple(sorted((f for f in forms if f), key=len, reverse=True))


def _secrets(settings: VantaxSettings) -> list[str]:
    found = [settings.api_key] if settings.api_key else []
    if settings.proxy:
        password = urlsplit(settings.proxy).password
        if password:
            found.append(password)
    return found


def scrub(text: str, settings: VantaxSettings) -> str:
    """``text`` with every form of the API key (and a proxy password) replaced by ``***``."""
    for secret in _secrets(settings):
        for form in secret_forms(secret):
            text = text.replace(form, "***")
    return text


def holds_secret(text: str, settings: VantaxSettings) -> bool:
    return any(form in text for secret in _secrets(settings) for form in secret_forms(secret))


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
            # Never shorter than the backoff: a Retry-After of 0 or a past date must not start a storm.
            wait = max(wait, error.retry_after * (1 + 0.1 * random.random()))
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
    cause = error.__cause__
    if isinstance(cause, ScrubbedCause):
        return str(cause).split(":", 1)[0].rsplit(".", 1)[-1]
    return type(cause).__name__ if cause else type(error).__name__


def has_idempotency_key(kwargs: dict[str, Any]) -> bool:
    return contract.IDEMPOTENCY_HEADER in (kwargs.get("headers") or {})
