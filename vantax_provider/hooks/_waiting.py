"""The hook's waits for a message's status, sync and async: what a read means, how long to sleep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from vantax_provider._arguments import finite_number
from vantax_provider.exceptions import VantaxError
from vantax_provider.models import DeliveryCheck, Message
from vantax_provider.status import TRANSIENT_ERRORS, Outcome, judge, status_set, timeout_text


class Poll:
    """
    The state of one wait for a message's status.

    :param log: the hook's logger.
    :param message_id: the message waited for.
    :param poll_interval: seconds between two reads.
    :param timeout: the wait's length, only to name it in the timeout text.
    :param remaining: seconds left before the deadline, or None without one.
    """

    def __init__(
        self,
        log: Any,  # the hook's logger (Airflow's own type differs between versions)
        message_id: str,
        poll_interval: float,
        timeout: float | None,
        remaining: Callable[[], float | None],
    ) -> None:
        self.log, self.message_id, self.remaining = log, message_id, remaining
        self.poll_interval = finite_number(poll_interval, "poll_interval", positive=True)
        self.timeout = None if timeout is None else finite_number(timeout, "timeout", minimum=0)
        self.last: str | None = None

    def after(self, read: DeliveryCheck | VantaxError) -> DeliveryCheck | float:
        """The final check, or the seconds to sleep before the next read (a transient error polls on)."""
        if isinstance(read, VantaxError):
            self.log.warning("Reading Vantax message %s failed, polling again: %s", self.message_id, read)
        else:
            self.last = read.status
            if read.outcome is not Outcome.PENDING:
                if read.outcome is Outcome.SUCCESS:
                    self.log.info("%s", read.text)
                return read
        remaining = self.remaining()
        if remaining is not None and remaining <= 0:
            text = timeout_text(self.message_id, self.last, self.timeout)
            return DeliveryCheck(Outcome.TIMEOUT, text, self.last)
        return self.poll_interval if remaining is None else min(self.poll_interval, max(remaining, 0.0))

    def wait(self, check: Callable[[], DeliveryCheck]) -> DeliveryCheck:
        """Read with ``check`` until final; transient errors poll on, other API errors are raised."""
        while True:
            try:
                step = self.after(check())
            except TRANSIENT_ERRORS as exc:
                step = self.after(exc)
            if isinstance(step, DeliveryCheck):
                return step
            time.sleep(step)

    async def await_(self, check: Callable[[], Awaitable[DeliveryCheck]]) -> DeliveryCheck:
        """Async twin of :meth:`wait` that never raises an API error: it ends in an ``error`` check."""
        while True:
            try:
                step = self.after(await check())
            except TRANSIENT_ERRORS as exc:
                step = self.after(exc)
            except VantaxError as exc:
                return DeliveryCheck(Outcome.ERROR, str(exc), self.last)
            if isinstance(step, DeliveryCheck):
                return step
            await asyncio.sleep(step)


def judged(
    message_id: str,
    message: Message,
    success_statuses: Iterable[str] | str | None,
    failure_statuses: Iterable[str] | str | None,
) -> DeliveryCheck:
    """A message read back, judged against the wait's success and failure statuses."""
    success, failure = status_set(success_statuses), status_set(failure_statuses)
    outcome, text = judge(message_id, message.status, success, failure)
    return DeliveryCheck(outcome, text, message.status, message)
