"""How a delivery status is classified while waiting; shared by the trigger, operator and sensor."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any

from vantax_provider import contract
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

DEFAULT_SUCCESS = frozenset({"delivered"})
DEFAULT_FAILURE = frozenset({"failed"})

#: Errors that may pass on their own: a wait logs them and polls again (the hook already retried).
TRANSIENT_ERRORS: tuple[type[VantaxError], ...] = (
    VantaxServerError,
    VantaxTransportError,
    VantaxRateLimitError,
    VantaxResponseError,  # a 2xx read without the envelope: the next poll may parse
)


class Outcome(str, Enum):
    """What one observed status means for a wait."""

    SUCCESS = "success"
    FAILURE = "failure"
    PENDING = "pending"
    #: A status that is neither known as in progress nor listed: the wait fails closed.
    UNKNOWN = "unknown"

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
    if value in contract.NON_TERMINAL_STATUSES:
        return Outcome.PENDING
    return Outcome.UNKNOWN


def event_status(event: object) -> tuple[dict[str, Any], str, str]:
    """The event, its ``status`` and ``message``, for a one-message trigger; a malformed one raises."""
    if not isinstance(event, dict) or not isinstance(event.get("status"), str) or not event.get("message_id"):
        from vantax_provider._compat import AirflowException

        raise AirflowException(f"Unexpected event from the Vantax trigger: {str(event)[:500]}")
    return event, event["status"], str(event.get("message", ""))


def unknown_status_message(status: str, message_id: str) -> str:
    return (
        f"Vantax message {message_id} reached status {status!r}, which is neither a known delivery status "
        "nor listed in success_statuses or failure_statuses: failing closed. List it in one of them to "
        "accept or reject it explicitly."
    )


def to_seconds(value: float | timedelta | None, name: str) -> float | None:
    """Seconds from a number or timedelta; None stays None.  Refuses negatives naming the field."""
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 0:
        raise ValueError(f"{name} must not be negative, got {value!r}.")
    return seconds


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
    return float(value)
