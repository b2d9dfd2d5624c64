"""The one retry policy of the provider: which failures are repeated, and how long to wait."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

from vantax_provider import contract
from vantax_provider.exceptions import (
    VantaxAPIError,
    VantaxError,
    VantaxResponseError,
    VantaxTransportError,
)


@dataclass(frozen=True)
class RetryPolicy:
    """
    Bounds on repeating a failed request.

    :param max_retries: repeats after the first attempt.
    :param backoff_base: seconds before the first repeat; doubled on each next one.
    :param backoff_max: the longest backoff between two attempts.
    :param max_retry_after: the longest ``Retry-After`` the client waits; a longer one raises.
    :param max_total: seconds from the first attempt after which no repeat is started.
    """

    max_retries: int = 5
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    max_retry_after: float = 60.0
    max_total: float = 120.0

    def backoff(self, retry_number: int) -> float:
        """Exponential backoff with 'equal jitter': half fixed, half random."""
        ceiling = min(self.backoff_max, self.backoff_base * 2.0**retry_number)
        return ceiling / 2 + random.uniform(0, ceiling / 2)


def is_retryable(error: VantaxError, *, method: str, idempotent: bool) -> bool:
    """
    Whether repeating the request is safe and may help.

    A POST is repeated only where the message cannot have been created, unless it carries an
    idempotency key, which makes a repeat of a created message harmless.
    """
    if isinstance(error, VantaxTransportError):
        return method == "GET" or idempotent or not error.maybe_sent
    if not isinstance(error, VantaxAPIError) or error.status_code is None:
        return False
    status = error.status_code
    if status in contract.NEVER_RETRY:
        return False
    if isinstance(error, VantaxResponseError) and 200 <= status < 300:
        # A 2xx whose body did not parse: the message was created.
        return method == "GET" or idempotent
    if method == "GET":
        return status == 429 or (status >= 500 and status != 501)
    if status in contract.POST_NOT_CREATED:
        return True
    return idempotent and status in contract.POST_MAYBE_CREATED


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """
    Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date.

    A negative, infinite or not-a-number value is no valid header: None.  A past date is 0.
    The caller waits at least its own backoff either way.
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())
