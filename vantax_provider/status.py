"""
The delivery-status vocabulary, in one place: the documented statuses, which are final, and how
a status is classified while waiting.  Every layer imports it from here.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any

from vantax_provider._arguments import finite_number
from vantax_provider.exceptions import (
    VantaxError,
    VantaxRateLimitError,
    VantaxResponseError,
    VantaxServerError,
    VantaxTransportError,
)

#: A deferred wait does not resume sooner than this after it deferred.  Airflow 3.3's scheduler may
#: fail a task resumed before it has handled the executor's event for the deferring exit
#: (apache/airflow#71580, #72716); see docs/reliability.md, "Deferred waits".
DEFERRAL_SETTLE_SECONDS = 10.0


class MessageStatus(str, Enum):
    """
    The documented delivery statuses.

    ``Message.status`` stays a plain string, so a value the API adds later still parses;
    :meth:`is_terminal` and the sets below classify the known ones.
    """

    QUEUED = "queued"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def is_terminal(cls, status: str) -> bool:
        return status in TERMINAL_STATUSES

    @classmethod
    def is_known(cls, status: str) -> bool:
        return status in KNOWN_STATUSES


#: The documented statuses (an API fact; other values may appear and are parsed as plain strings).
KNOWN_STATUSES = frozenset(MessageStatus)
#: Final statuses: the message will not change any more.
TERMINAL_STATUSES = frozenset({MessageStatus.DELIVERED, MessageStatus.FAILED})
#: In progress: a wait polls again.
NON_TERMINAL_STATUSES = KNOWN_STATUSES - TERMINAL_STATUSES
#: What a wait accepts, and rejects, unless the user lists a status the other way.
DEFAULT_SUCCESS = frozenset({MessageStatus.DELIVERED})
DEFAULT_FAILURE = frozenset({MessageStatus.FAILED})

#: Errors that may pass on their own: a wait logs them and polls again (the hook already retried).
TRANSIENT_ERRORS: tuple[type[VantaxError], ...] = (
    VantaxServerError,
    VantaxTransportError,
    VantaxRateLimitError,
    VantaxResponseError,  # a 2xx read without the envelope: the next poll may parse
)


class Outcome(str, Enum):
    """
    What one observed status means for a wait, and how a wait ends.

    The values are the ``status`` of a trigger's event.
    """

    SUCCESS = "success"
    FAILURE = "failure"
    PENDING = "pending"
    #: A status that is neither known as in progress nor listed: the wait fails closed.
    UNKNOWN = "unknown"
    #: The deadline passed while the message was still in progress (never from :func:`classify`).
    TIMEOUT = "timeout"
    #: A read failed for good, e.g. 404 (never from :func:`classify`).
    ERROR = "error"

    def __str__(self) -> str:
        return self.value


def status_set(values: Iterable[str] | str | None) -> frozenset[str]:
    """Normalise a user's ``success_statuses``/``failure_statuses`` (one string or many) to a set."""
    if values is None:
        return frozenset()
    if isinstance(values, str):
        values = [values]
    return frozenset(v.strip().lower() for v in values if v and v.strip())


def check_status_sets(success: frozenset[str], failure: frozenset[str]) -> None:
    """A status may not be both a success and a failure."""
    both = success & failure
    if both:
        raise ValueError(
            f"success_statuses and failure_statuses overlap on {sorted(both)}: "
            "a status must be one or the other."
        )


def classify(
    status: str, success: frozenset[str] = frozenset(), failure: frozenset[str] = frozenset()
) -> Outcome:
    """
    Classify a status; the user's sets win over the defaults.

    delivered is a success and failed a failure unless listed the other way; queued and sent
    are in progress unless listed; anything else is :attr:`Outcome.UNKNOWN`.
    """
    value = (status or "").strip().lower()
    if value in success:
        return Outcome.SUCCESS
    if value in failure:
        return Outcome.FAILURE
    if value in DEFAULT_SUCCESS:
        return Outcome.SUCCESS
    if value in DEFAULT_FAILURE:
        return Outcome.FAILURE
    if value in NON_TERMINAL_STATUSES:
        return Outcome.PENDING
    return Outcome.UNKNOWN


def judge(
    message_id: str, status: str, success: frozenset[str], failure: frozenset[str]
) -> tuple[Outcome, str]:
    """One reading of a wait: the status's :class:`Outcome` and the text a user reads for it."""
    outcome = classify(status, success, failure)
    if outcome is Outcome.SUCCESS:
        return outcome, f"Vantax message {message_id} is {status}."
    if outcome is Outcome.FAILURE:
        return outcome, f"Vantax message {message_id} was not delivered: status {status!r}."
    if outcome is Outcome.UNKNOWN:
        return outcome, unknown_status_message(status, message_id)
    return outcome, f"Vantax message {message_id} is still {status}."


def timeout_text(message_id: str, last: str | None, seconds: float | None = None) -> str:
    """Why a wait ended at its deadline; ``seconds``, when given, is the wait's length."""
    after = "" if seconds is None else f" after {seconds:g}s"
    return f"Timed out{after} waiting for Vantax message {message_id} to be delivered; last status {last!r}."


def unknown_status_message(status: str, message_id: str) -> str:
    return (
        f"Vantax message {message_id} reached status {status!r}, which is neither a known delivery status "
        "nor listed in success_statuses or failure_statuses: failing closed. List it in one of them to "
        "accept or reject it explicitly."
    )


def outcome_error(
    outcome: Outcome | str, text: str, *, timeout_error: type[Exception] | None = None
) -> Exception | None:
    """
    The exception that ends a task for a wait's ``outcome``; None on success.

    ``failure`` and ``unknown`` fail the task without retries (``AirflowFailException``);
    ``timeout`` raises ``timeout_error`` (default ``AirflowException``: a retry waits again) and
    ``error`` an ``AirflowException``; anything else is an unexpected status.
    """
    from vantax_provider._compat import AirflowException, AirflowFailException

    value = outcome.value if isinstance(outcome, Outcome) else outcome
    if value == Outcome.SUCCESS.value:
        return None
    if value in (Outcome.FAILURE.value, Outcome.UNKNOWN.value):
        return AirflowFailException(text)
    if value == Outcome.TIMEOUT.value:
        return (timeout_error or AirflowException)(text)
    if value == Outcome.ERROR.value:
        return AirflowException(text)
    return AirflowException(f"Unexpected status {value!r} in the Vantax trigger's event: {text}")


def event_outcome(
    event: object, *, timeout_error: type[Exception] | None = None
) -> tuple[dict[str, Any], Exception | None]:
    """
    A one-message trigger's event, and the exception it stands for (None on success).

    The one reading of :class:`~vantax_provider.triggers.vantax.VantaxMessageStatusTrigger`'s
    events, for every ``execute_complete``; a malformed event raises ``AirflowException``.
    """
    if not isinstance(event, dict) or not isinstance(event.get("status"), str) or not event.get("message_id"):
        from vantax_provider._compat import AirflowException

        raise AirflowException(f"Unexpected event from the Vantax trigger: {str(event)[:500]}")
    return event, outcome_error(event["status"], str(event.get("message", "")), timeout_error=timeout_error)


def to_seconds(value: float | timedelta | None, name: str) -> float | None:
    """Seconds from a number or timedelta; None stays None.  Refuses negatives, NaN and infinities."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    return finite_number(value, name, minimum=0)


def settle_until(seconds: float | None = None) -> float:
    """
    The earliest time (epoch seconds) a trigger deferred now may fire its event.

    ``seconds`` None reads ``[vantax] deferral_settle_seconds`` (default
    ``DEFERRAL_SETTLE_SECONDS``): 0 turns the hold off where Airflow has no such race.
    """
    import time

    from vantax_provider._compat import conf_seconds

    if seconds is None:
        seconds = conf_seconds("vantax", "deferral_settle_seconds", DEFERRAL_SETTLE_SECONDS)
    return time.time() + seconds


def to_epoch(value: float | str | datetime | None) -> float | None:
    """An ``end_time`` as seconds since the epoch; ISO strings and aware datetimes are accepted too."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.timestamp()
    return finite_number(value, "end_time")
