"""Triggers that wait, in the triggerer, for Vantax messages to reach a final delivery status."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from vantax_provider._arguments import finite_number, whole_number
from vantax_provider._compat import aget_xcom, in_process_supervisor
from vantax_provider.defaults import DEFAULT_POLL_INTERVAL, DEFAULT_READ_CONCURRENCY
from vantax_provider.exceptions import VantaxError
from vantax_provider.hooks.vantax import VantaxHook
from vantax_provider.status import (
    TRANSIENT_ERRORS,
    Outcome,
    classify,
    status_set,
    to_epoch,
)

MAX_LISTED_STATUSES = 1000  # statuses listed one by one in the many-message event


def _statuses(values: Iterable[str] | str | None) -> list[str] | None:
    return None if values is None else sorted(status_set(values))


def _remaining(end_time: float | None) -> float | None:
    return None if end_time is None else end_time - time.time()


class _StatusWait(BaseTrigger):
    """What both triggers share: the connection, deadline, poll interval and the status sets."""

    def __init__(
        self,
        *,
        vantax_conn_id: str,
        end_time: float | str | datetime | None,
        poll_interval: float,
        success_statuses: Iterable[str] | str | None,
        failure_statuses: Iterable[str] | str | None,
        not_before: float | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.poll_interval = finite_number(poll_interval, "poll_interval", positive=True)
        self.vantax_conn_id = vantax_conn_id
        self.end_time = to_epoch(end_time)  # NaN and infinities refused
        self.success_statuses = _statuses(success_statuses)
        self.failure_statuses = _statuses(failure_statuses)
        self._success = frozenset(self.success_statuses or ())
        self._failure = frozenset(self.failure_statuses or ())
        self.not_before = None if not_before is None else finite_number(not_before, "not_before")

    def _common_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "vantax_conn_id": self.vantax_conn_id,
            "end_time": self.end_time,
            "poll_interval": self.poll_interval,
            "success_statuses": self.success_statuses,
            "failure_statuses": self.failure_statuses,
        }
        if self.not_before is not None:
            kwargs["not_before"] = self.not_before
        return kwargs

    async def _settle(self) -> None:
        """
        Hold the event until ``not_before`` (see ``DEFERRAL_SETTLE_SECONDS``).

        Not under ``dag.test()`` / ``airflow dags test``: they run the trigger in line, with no
        scheduler whose race the hold guards against.
        """
        wait = 0.0 if self.not_before is None else self.not_before - time.time()
        if wait <= 0:
            return
        if in_process_supervisor():
            self.log.info("Not holding the event: dag.test() runs the trigger in-process, no scheduler.")
            return
        self.log.info(
            "Holding the event for %.1fs more ([vantax] deferral_settle_seconds after the deferral), "
            "so that Airflow's scheduler has handled the deferral before the task resumes.",
            wait,
        )
        await asyncio.sleep(wait)

    def _classpath(self) -> str:
        return f"{type(self).__module__}.{type(self).__qualname__}"

    async def _sleep(self) -> None:
        remaining = _remaining(self.end_time)
        wait = self.poll_interval if remaining is None else min(self.poll_interval, max(remaining, 0.0))
        await asyncio.sleep(wait)


class VantaxMessageStatusTrigger(_StatusWait):
    """
    Poll one message until it is delivered, failed, in an unknown status, or the deadline passes.

    The event is JSON: ``{"status": "success" | "failure" | "unknown" | "timeout" | "error",
    "message": <text>, "message_id": ..., "conversation_id": ..., "delivery_status": <last status or None>}``.
    Transient API errors (5xx, 429, transport) are logged and polled through; other API errors end
    the wait with ``"error"``.

    :param conversation_id: the message's conversation.
    :param message_id: the message to watch.
    :param vantax_conn_id: the Airflow connection; the trigger never carries the API key.
    :param end_time: deadline as seconds since the epoch (an ISO string or aware datetime is converted);
        None waits without a deadline.
    :param poll_interval: seconds between two reads.
    :param success_statuses: statuses that count as delivered, besides ``delivered``.
    :param failure_statuses: statuses that count as failed, besides ``failed``.
    :param not_before: epoch seconds before which no event is fired (the deferral's settle time);
        None fires as soon as the outcome is known.
    """

    def __init__(
        self,
        conversation_id: str,
        message_id: str,
        *,
        vantax_conn_id: str = VantaxHook.default_conn_name,
        end_time: float | str | datetime | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        success_statuses: Iterable[str] | str | None = None,
        failure_statuses: Iterable[str] | str | None = None,
        not_before: float | None = None,
    ) -> None:
        super().__init__(
            vantax_conn_id=vantax_conn_id, end_time=end_time, poll_interval=poll_interval,
            success_statuses=success_statuses, failure_statuses=failure_statuses, not_before=not_before,
        )  # fmt: skip
        self.conversation_id = conversation_id
        self.message_id = message_id

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return self._classpath(), {
            "conversation_id": self.conversation_id,
            "message_id": self.message_id,
            **self._common_kwargs(),
        }

    async def _event(self, status: str, message: str, delivery_status: str | None) -> TriggerEvent:
        await self._settle()
        payload = {
            "status": status,
            "message": message,
            "message_id": self.message_id,
            "conversation_id": self.conversation_id,
            "delivery_status": delivery_status,
        }
        return TriggerEvent(payload)  # type: ignore[no-untyped-call]

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = VantaxHook(self.vantax_conn_id)
        try:
            check = await hook.await_message_status(
                self.conversation_id, self.message_id, success_statuses=self._success,
                failure_statuses=self._failure, end_time=self.end_time, poll_interval=self.poll_interval,
            )  # fmt: skip
            yield await self._event(check.outcome.value, check.text, check.status)
        finally:
            await hook.aclose()


class VantaxMessagesStatusTrigger(_StatusWait):
    """
    Poll many messages, concurrently with a bound, until each has a final status or the deadline passes.

    The messages come either as a list (``messages``, for a wait in the worker) or as a reference to
    an XCom holding that list (``messages_xcom``, what a deferral stores), so that the serialised
    kwargs do not grow with the batch.  Give exactly one.

    One event when every message is final or at the deadline: ``{"status": "success" | "failure" |
    "timeout" | "error", "message": <text>, "total": n, "counts": {"success", "failure", "unknown",
    "error", "pending"}, "success_status": <the most common success status or None>,
    "statuses": {message_id: last status or None}, "statuses_omitted": n, "errors": {message_id: text}}``.
    ``statuses`` lists only the messages whose last status is not ``success_status``, the first
    ``MAX_LISTED_STATUSES`` of them (``statuses_omitted`` counts the rest); every message not listed
    ended in ``success_status`` when ``statuses_omitted`` is 0.  ``success`` means every message
    succeeded; ``timeout`` that some were still in progress; ``error`` that the XCom could not be read.
    A message whose read fails permanently (e.g. 404) is counted under ``error`` and not polled again.

    :param messages: ``[conversation_id, message_id]`` pairs (tuples are accepted and stored as lists).
    :param messages_xcom: where the pairs are stored instead: ``{"dag_id", "task_id", "run_id",
        "map_index", "key"}`` of an XCom.
    :param vantax_conn_id: the Airflow connection; the trigger never carries the API key.
    :param end_time: deadline as seconds since the epoch; None waits without a deadline.
    :param poll_interval: seconds between two polling rounds.
    :param success_statuses: statuses that count as delivered, besides ``delivered``.
    :param failure_statuses: statuses that count as failed, besides ``failed``.
    :param max_concurrency: most reads in flight at once (the connection's rate limit applies too).
    :param not_before: epoch seconds before which no event is fired; None fires at once.
    """

    def __init__(
        self,
        messages: Sequence[Sequence[str]] | None = None,
        *,
        messages_xcom: Mapping[str, Any] | None = None,
        vantax_conn_id: str = VantaxHook.default_conn_name,
        end_time: float | str | datetime | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        success_statuses: Iterable[str] | str | None = None,
        failure_statuses: Iterable[str] | str | None = None,
        max_concurrency: int = DEFAULT_READ_CONCURRENCY,
        not_before: float | None = None,
    ) -> None:
        super().__init__(
            vantax_conn_id=vantax_conn_id, end_time=end_time, poll_interval=poll_interval,
            success_statuses=success_statuses, failure_statuses=failure_statuses, not_before=not_before,
        )  # fmt: skip
        if (messages is None) == (messages_xcom is None):
            raise ValueError("Give exactly one of messages and messages_xcom.")
        self.max_concurrency = whole_number(max_concurrency, "max_concurrency", minimum=1)
        self.messages = None if messages is None else _pairs(messages)
        self.messages_xcom = None if messages_xcom is None else _xcom_reference(messages_xcom)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        given: dict[str, Any] = (
            {"messages": self.messages}
            if self.messages is not None
            else {"messages_xcom": self.messages_xcom}
        )
        return self._classpath(), {**given, **self._common_kwargs(), "max_concurrency": self.max_concurrency}

    async def _load(self) -> list[list[str]]:
        """The pairs, from the constructor or from the referenced XCom."""
        if self.messages is not None:
            return self.messages
        ref = self.messages_xcom or {}
        value = await aget_xcom(
            key=ref["key"], dag_id=ref["dag_id"], task_id=ref["task_id"], run_id=ref["run_id"],
            map_index=ref["map_index"],
        )  # fmt: skip
        if value is None:
            raise ValueError(
                f"XCom {ref['key']!r} of task {ref['task_id']!r} (run {ref['run_id']!r}) is missing."
            )
        return _pairs(value)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            messages = await self._load()
        except Exception as exc:  # a missing or malformed XCom, or a triggerer that cannot answer
            await self._settle()
            text = f"Cannot read the Vantax messages to wait for: {str(exc)[:300]}"
            yield TriggerEvent({"status": "error", "message": text})  # type: ignore[no-untyped-call]
            return
        hook = VantaxHook(self.vantax_conn_id)
        statuses: dict[str, str | None] = {message_id: None for _, message_id in messages}
        errors: dict[str, str] = {}
        pending = list(messages)
        limit = asyncio.Semaphore(self.max_concurrency)

        async def read(conversation_id: str, message_id: str) -> None:
            async with limit:
                try:
                    statuses[message_id] = (await hook.aget_message(conversation_id, message_id)).status
                except TRANSIENT_ERRORS as exc:
                    self.log.warning("Reading Vantax message %s failed, polling again: %s", message_id, exc)
                except VantaxError as exc:
                    errors[message_id] = str(exc)

        try:
            while True:
                await asyncio.gather(*(read(c, m) for c, m in pending))
                pending = [
                    [c, m]
                    for c, m in pending
                    if m not in errors and self._outcome(statuses[m]) is Outcome.PENDING
                ]
                remaining = _remaining(self.end_time)
                if not pending or (remaining is not None and remaining <= 0):
                    summary = self._summary(statuses, errors, timed_out=bool(pending))
                    await self._settle()
                    yield TriggerEvent(summary)  # type: ignore[no-untyped-call]
                    return
                await self._sleep()
        finally:
            await hook.aclose()

    def _outcome(self, status: str | None) -> Outcome:
        return Outcome.PENDING if status is None else classify(status, self._success, self._failure)

    def _summary(
        self, statuses: dict[str, str | None], errors: dict[str, str], *, timed_out: bool
    ) -> dict[str, Any]:
        counts = {"success": 0, "failure": 0, "unknown": 0, "error": 0, "pending": 0}
        successes: Counter[str] = Counter()
        for message_id, status in statuses.items():
            outcome = "error" if message_id in errors else self._outcome(status).value
            counts[outcome] += 1
            if outcome == "success" and status is not None:
                successes[status] += 1
        total = len(statuses)
        if timed_out:
            status, text = (
                "timeout",
                f"Timed out with {counts['pending']} of {total} Vantax messages still in progress.",
            )
        elif counts["success"] == total:
            status, text = "success", f"All {total} Vantax messages were delivered."
        else:
            status = "failure"
            text = (
                f"{total - counts['success']} of {total} Vantax messages were not delivered "
                f"(failed {counts['failure']}, unknown status {counts['unknown']}, "
                f"unreadable {counts['error']})."
            )
        common = successes.most_common(1)[0][0] if successes else None
        others = [m for m, s in statuses.items() if s != common or m in errors or s is None]
        listed = others[:MAX_LISTED_STATUSES]
        return {
            "status": status, "message": text, "total": total, "counts": counts, "success_status": common,
            "statuses": {m: statuses[m] for m in listed}, "statuses_omitted": len(others) - len(listed),
            "errors": {m: errors[m] for m in listed if m in errors},
        }  # fmt: skip


def _pairs(messages: Any) -> list[list[str]]:
    pairs = [list(pair) for pair in messages]
    if any(len(pair) != 2 or not all(isinstance(p, str) for p in pair) for pair in pairs):
        raise ValueError("messages must be [conversation_id, message_id] pairs of strings.")
    return pairs


_XCOM_FIELDS = {"dag_id": str, "task_id": str, "run_id": str, "map_index": int, "key": str}


def _xcom_reference(ref: Mapping[str, Any]) -> dict[str, Any]:
    if set(ref) != set(_XCOM_FIELDS) or not all(isinstance(ref[k], t) for k, t in _XCOM_FIELDS.items()):
        raise ValueError(
            f"messages_xcom must be {{{', '.join(_XCOM_FIELDS)}}} with str values and an int map_index."
        )
    return {k: ref[k] for k in _XCOM_FIELDS}
