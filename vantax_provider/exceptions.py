"""Typed errors raised by the Vantax provider."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

#: The most characters of text from the server (an error envelope's message, a status...) kept
#: anywhere: in an exception, a log line, an XCom value or a trigger event.
MAX_SERVER_TEXT = 300
#: The most characters of a whole error text (a validation error may list several fields).
MAX_ERROR_TEXT = 1000


def bound_text(text: str, limit: int = MAX_SERVER_TEXT) -> str:
    """Cut ``text`` to at most ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    left_out = len(text) - limit
    marker = f"... [{left_out} more characters]"
    return text[: max(0, limit - len(marker))] + marker


@dataclass(frozen=True)
class FieldError:
    """One failing field of a request, with the reason it was refused."""

    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


class VantaxError(Exception):
    """
    Base class of every error this provider raises.

    :param message: what went wrong, in words meant for the DAG author.
    :param status_code: the HTTP status of the answer, when there was one.
    :param api_message: the ``message`` field of the server's error envelope, when there was one.
    :param method: the HTTP method of the failed request.
    :param path: the request path (never the query, headers or the API key).
    :param url: the full URL of the failed request (base URL and path), when known.
    """

    #: A hint appended to the message, for errors where the fix is known.
    advice: str = ""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        api_message: str | None = None,
        method: str | None = None,
        path: str | None = None,
        url: str | None = None,
    ) -> None:
        self.status_code = status_code
        self.api_message = bound_text(api_message) if api_message is not None else None
        self.method = method
        self.path = path
        self.url = url
        parts = [message]
        if status_code is not None:
            parts.append(f"(HTTP {status_code} on {method or '?'} {url or path or '?'})")
        if self.api_message:
            parts.append(f"Vantax said: {self.api_message!r}.")
        if self.advice:
            parts.append(self.advice)
        super().__init__(bound_text(" ".join(parts), MAX_ERROR_TEXT))


class VantaxConfigurationError(VantaxError, ValueError):
    """The Airflow connection or hook arguments are unusable (bad base URL, missing API key...)."""


class VantaxValidationError(VantaxError, ValueError):
    """
    A message failed validation before any request was made.

    :param errors: every failing field with its reason.
    """

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors = tuple(errors)
        listed = "; ".join(str(e) for e in self.errors)
        super().__init__(f"Invalid Vantax message ({len(self.errors)} error(s)): {listed}")

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(e.field for e in self.errors)


class VantaxAPIError(VantaxError):
    """The server answered with an error status."""


class VantaxAuthenticationError(VantaxAPIError):
    """401/403: the API key is missing, wrong or not allowed to do this."""

    advice = "Check the API key in the password field of the Vantax connection."


class VantaxNotFoundError(VantaxAPIError):
    """404: the conversation or message does not exist."""


class VantaxInvalidRequestError(VantaxAPIError):
    """400, 413 or 415: the server refused the request as malformed."""


class VantaxConflictError(VantaxAPIError):
    """409: the idempotency key was already used with a different request body."""


class VantaxMessagingWindowError(VantaxAPIError):
    """422: the channel's messaging window is closed (e.g. WhatsApp's 24-hour window)."""

    advice = (
        "The platform's messaging window for this contact is closed: send an approved template "
        "message instead, or wait until the contact writes again."
    )


class VantaxRateLimitError(VantaxAPIError):
    """
    429: too many requests, and the wait asked for is longer than the client may wait.

    :param retry_after: seconds the server asked to wait, when it said.
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        status_code: int | None = None,
        api_message: str | None = None,
        method: str | None = None,
        path: str | None = None,
        url: str | None = None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(
            message, status_code=status_code, api_message=api_message, method=method, path=path, url=url
        )


class VantaxServerError(VantaxAPIError):
    """5xx: the service failed."""


class VantaxResponseError(VantaxAPIError):
    """The answer was not the documented JSON envelope."""


class VantaxTransportError(VantaxError):
    """
    The request did not get an answer: connection refused, timeout or dropped connection.

    :param maybe_sent: False when the request cannot have reached the server (e.g. refused).
    """

    def __init__(
        self,
        message: str,
        *,
        maybe_sent: bool,
        method: str | None = None,
        path: str | None = None,
        url: str | None = None,
    ) -> None:
        self.maybe_sent = maybe_sent
        super().__init__(message, method=method, path=path, url=url)


class VantaxProxyError(VantaxTransportError):
    """
    The proxy of the connection's ``proxy`` extra refused or failed the request (a 407, a refused
    ``CONNECT``): nothing reached Vantax, so ``maybe_sent`` is False.

    :param status_code: the proxy's HTTP status, when it answered with one.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        method: str | None = None,
        path: str | None = None,
        url: str | None = None,
    ) -> None:
        self.maybe_sent = False
        VantaxError.__init__(self, message, status_code=status_code, method=method, path=path, url=url)


class VantaxRequestError(VantaxError):
    """
    The HTTP library refused to build the request (e.g. an illegal header value): nothing was
    sent, and repeating it would fail the same way, so it is never retried.
    """


def error_for_status(status_code: int) -> type[VantaxAPIError]:
    """Map an HTTP error status to the error class that describes it."""
    if status_code in (401, 403):
        return VantaxAuthenticationError
    if status_code == 404:
        return VantaxNotFoundError
    if status_code == 409:
        return VantaxConflictError
    if status_code == 422:
        return VantaxMessagingWindowError
    if status_code == 429:
        return VantaxRateLimitError
    if status_code >= 500:
        return VantaxServerError
    if status_code in (400, 413, 415) or 400 <= status_code < 500:
        return VantaxInvalidRequestError
    return VantaxResponseError
