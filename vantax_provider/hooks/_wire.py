"""Requests and answers on the wire: paths, headers, error mapping and the retry decision."""

from __future__ import annotations

import json
import logging
import random
import time
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, urlsplit

from vantax_provider import contract
from vantax_provider.exceptions import (
    FieldError,
    VantaxError,
    VantaxProxyError,
    VantaxRateLimitError,
    VantaxRequestError,
    VantaxResponseError,
    VantaxTransportError,
    VantaxValidationError,
    bound_text,
    error_for_status,
)
from vantax_provider.hooks._retry import RetryPolicy, is_retryable, parse_retry_after
from vantax_provider.hooks._scrub import ScrubbedCause, exception_text, holds_secret, scrub

if TYPE_CHECKING:
    import httpx

    from vantax_provider.hooks._settings import VantaxSettings
    from vantax_provider.models import Message, SendMessageRequest


log = logging.getLogger(__name__)


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

    # A body that does not decode (a broken gzip) is a DecodingError, not a TransportError.
    return (httpx.TransportError, httpx.DecodingError, httpx.InvalidURL, UnicodeError)


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
    elif isinstance(exc, httpx.ProxyError):
        # The proxy refused the tunnel (CONNECT) or its handshake failed: nothing reached Vantax.
        status = str(exc)[:3]
        error = VantaxProxyError(
            f"The proxy {proxy_shown(settings)} did not carry Vantax {method} {url}; nothing reached "
            f"Vantax: {bound_text(summary)}. Check the connection's 'proxy' extra.",
            status_code=int(status) if status.isdigit() else None, method=method, path=path, url=url,
        )  # fmt: skip
    else:
        # Refused or never connected: the request cannot have reached the server.
        not_sent = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
        kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
        through = f" (through the proxy {proxy_shown(settings)})" if settings.proxy and not_sent else ""
        error = VantaxTransportError(
            f"Vantax {method} {url} {kind}{through}: {bound_text(summary)}",
            maybe_sent=not not_sent, method=method, path=path, url=url,
        )  # fmt: skip
    # The library's exception is chained only when no form of a secret is in its text.
    error.__cause__ = exc if not holds_secret(exception_text(exc), settings) else ScrubbedCause(summary)
    error.__suppress_context__ = True
    return error


def proxy_shown(settings: VantaxSettings) -> str:
    """The proxy's scheme, host and port: never its user name or password."""
    parts = urlsplit(settings.proxy or "")
    host = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else parts.hostname
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}" if host else "(none)"


def read_answer(
    response: httpx.Response, raw: bytes | None, method: str, path: str, settings: VantaxSettings
) -> Message | VantaxError:
    """
    The message of a success envelope, or the error that describes the answer.  ``raw`` is the
    body, None when it was longer than the hook reads (``_answers.MAX_ANSWER_BYTES``).
    """
    status = response.status_code
    body: Any = None
    if raw is not None:
        try:
            body = json.loads(raw)
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
    if status == 407:  # only a proxy asks for proxy credentials
        return VantaxProxyError(
            f"A proxy on the way to Vantax ({proxy_shown(settings)}) asked for credentials (407); "
            "nothing reached Vantax. Check the user and password in the connection's 'proxy' extra.",
            status_code=status, method=method, path=path, url=settings.base_url + path,
        )  # fmt: skip
    if 200 <= status < 300:
        if raw is None:
            from vantax_provider.hooks._answers import MAX_ANSWER_BYTES

            return VantaxResponseError(
                f"Vantax answered with a body larger than {MAX_ANSWER_BYTES:,} bytes; it was not read.",
                **where,
            )
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


#: The most characters of a message's ``content`` kept from an answer (four times the documented
#: limit), and of each of its other text fields: a longer one is cut, saying so; at most
#: ``MAX_ANSWER_MEDIA_URLS`` media URLs are kept.  What an answer puts into a result (an XCom
#: value) stays bounded.
MAX_ANSWER_CONTENT_CHARS = 4 * contract.CONTENT_MAX_CHARS
MAX_ANSWER_TEXT_CHARS = 1000
MAX_ANSWER_MEDIA_URLS = 20
_TEXT_FIELDS = ("conversation_id", "channel", "direction", "subject", "sender_type")


def _bounded(data: dict[str, Any]) -> dict[str, Any]:
    """The message fields of an answer, over-long texts cut (with a marker) and media URLs bounded."""
    kept, cut = dict(data), []
    for name in ("content", *_TEXT_FIELDS):
        value = kept.get(name)
        limit = MAX_ANSWER_CONTENT_CHARS if name == "content" else MAX_ANSWER_TEXT_CHARS
        if isinstance(value, str) and len(value) > limit:
            kept[name] = bound_text(value, limit)
            cut.append(name)
    media = kept.get("media_url")
    if isinstance(media, list):
        fitting = [u for u in media if not (isinstance(u, str) and len(u) > contract.URL_MAX_CHARS)]
        if len(fitting) != len(media) or len(media) > MAX_ANSWER_MEDIA_URLS:
            kept["media_url"] = fitting[:MAX_ANSWER_MEDIA_URLS]
            cut.append("media_url")
    if cut:
        log.warning("Vantax answered a message with over-long field(s) %s: cut.", ", ".join(cut))
    return kept


def _message(data: dict[str, Any], method: str, where: dict[str, Any]) -> Message | VantaxError:
    """
    The ``Message`` in a 2xx answer.  A create answer with a usable string id counts as created
    even when other fields do not fit (they are dropped); anything else that does not fit is a
    :class:`VantaxResponseError` that names the fields, never their values.
    """
    from pydantic import ValidationError

    from vantax_provider.models import Message

    data = _bounded(data)
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
