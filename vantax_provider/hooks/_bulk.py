"""
The bulk engine behind :meth:`VantaxHook.asend_many`: many sends through one hook, concurrently.

One feeder takes items from the iterator as slots free up (or a few ahead) and a fixed pool of
senders sends them, so memory stays flat however many recipients there are (10,000 recipients
never means 10,000 coroutines).  Pacing, Retry-After
pauses and retries stay in the hook (``asend_request`` / ``aget_message``); nothing here retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator
from typing import Any, Protocol

from vantax_provider._arguments import finite_number, whole_number
from vantax_provider.contract import POST_MAYBE_CREATED
from vantax_provider.defaults import DEFAULT_SEND_CONCURRENCY
from vantax_provider.exceptions import VantaxAuthenticationError, VantaxError, VantaxTransportError
from vantax_provider.models import BulkItem, BulkProgress, Message, SendMessageRequest, SendOutcome

log = logging.getLogger(__name__)


class BulkSender(Protocol):
    """What the engine needs of a hook (:class:`VantaxHook` is one): a paced, retried async send."""

    async def asend_request(
        self,
        request: SendMessageRequest,
        *,
        idempotency_key: str | None = None,
        repeat_uncertain: bool = True,
    ) -> Message: ...


OnOutcome = Callable[[SendOutcome], None]
OnTick = Callable[[BulkProgress], Awaitable[None]]
#: Called with each item as it is taken; what it returns (if anything) is awaited before the send.
Admit = Callable[[BulkItem], Awaitable[None] | None]
#: Called with each item that was taken and never sent, when the batch stops on an error.
OnUnsent = Callable[[BulkItem], None]


async def asend_many(
    hook: BulkSender,
    items: Iterable[BulkItem],
    *,
    max_concurrency: int = DEFAULT_SEND_CONCURRENCY,
    on_outcome: OnOutcome | None = None,
    on_tick: OnTick | None = None,
    tick_interval: float = 1.0,
    admit: Admit | None = None,
    ahead: int = 0,
    on_unsent: OnUnsent | None = None,
    repeat_uncertain: bool = True,
) -> BulkProgress:
    """
    Send every item with at most ``max_concurrency`` requests in flight.

    ``items`` is consumed lazily, so a generator that renders and validates recipients on
    demand keeps memory flat.  Each finished send is reported to ``on_outcome`` (a
    :class:`VantaxError` becomes a failed outcome; any other exception stops the batch).
    ``on_tick`` runs every ``tick_interval`` seconds and once more at the end, also when the
    batch stops on an error, so a checkpoint written there covers everything that finished.
    ``admit`` is called with each item as it is taken from ``items``, and the awaitable it
    returns is awaited before the item's request starts (a write-ahead record).  Items are taken
    when a slot is free, or up to ``ahead`` items earlier, so that a slow admission overlaps the
    requests in flight: at most ``max_concurrency + ahead`` items are taken and not finished.
    When the batch stops on an error, ``on_unsent`` gets each item that was taken and whose
    request never started (known not sent).
    A refused API key (401/403) stops the batch: its outcome is reported, no other request starts,
    the requests in flight finish and are reported, and the refusal is raised at the end (every
    other recipient would be refused the same way).
    ``repeat_uncertain=False`` never repeats a request that may have created its message (a read
    timeout, a 500/502/504), even under an idempotency key: for a service that does not
    deduplicate; such a failure is reported with ``maybe_sent``.
    """
    max_concurrency = whole_number(max_concurrency, "max_concurrency", minimum=1)
    ahead = whole_number(ahead, "ahead", minimum=0)
    tick_interval = finite_number(tick_interval, "tick_interval", positive=True)
    iterator: Iterator[BulkItem] = iter(items)
    progress = BulkProgress(started=time.monotonic())
    window = asyncio.Semaphore(max_concurrency + ahead)  # taken and not finished
    taken: asyncio.Queue[tuple[BulkItem, Awaitable[None] | None] | None] = asyncio.Queue()
    unsent: dict[int, BulkItem] = {}  # taken, request not started: by position
    refused: list[VantaxAuthenticationError] = []  # the first refusal of the key ends the batch

    async def feeder() -> None:
        try:
            while True:
                await window.acquire()  # the sender that records a refusal releases after it
                item = None if refused else next(iterator, None)
                if item is None:
                    break
                unsent[item[0]] = item
                taken.put_nowait((item, None if admit is None else admit(item)))
        finally:  # the end, or an error: one stop sign per sender
            for _ in range(max_concurrency):
                taken.put_nowait(None)

    async def sender() -> None:
        while (entry := await taken.get()) is not None:
            (index, request, key), admission = entry
            if admission is not None and not refused:
                await admission
            if refused:
                break  # the item stays in unsent: known not sent
            del unsent[index]
            progress.in_flight += 1
            try:
                message = await hook.asend_request(
                    request, idempotency_key=key, repeat_uncertain=repeat_uncertain
                )
            except VantaxError as exc:
                outcome = _failed(index, request.conversation_id, exc)
                progress.failed += 1
                if isinstance(exc, VantaxAuthenticationError) and not refused:
                    refused.append(exc)
            else:
                outcome = _sent(index, request.conversation_id, message)
                progress.sent += 1
            finally:
                progress.in_flight -= 1
            if on_outcome is not None:
                on_outcome(outcome)
            window.release()

    try:
        await _run_pool(
            [feeder(), *(sender() for _ in range(max_concurrency))], progress, on_tick, tick_interval
        )
    finally:
        if on_unsent is not None:
            for item in unsent.values():  # empty unless the batch stopped on an error
                on_unsent(item)
    if refused:
        raise refused[0]
    return progress


async def _run_pool(
    coroutines: list[Coroutine[Any, Any, None]],
    progress: BulkProgress | None,
    on_tick: OnTick | None,
    tick_interval: float,
) -> None:
    workers = [asyncio.create_task(c) for c in coroutines]
    ticker = None
    if on_tick is not None and progress is not None:
        ticker = asyncio.create_task(_tick_forever(on_tick, progress, tick_interval))
    try:
        await asyncio.gather(*workers)
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
        if on_tick is not None and progress is not None:
            progress.finished = True
            await on_tick(progress)  # the last checkpoint, also after an error


async def _tick_forever(on_tick: OnTick, progress: BulkProgress, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        await on_tick(progress)


def _sent(index: int, conversation_id: str, message: Message) -> SendOutcome:
    return SendOutcome(index, conversation_id, message_id=message.id, status=message.status)


def _failed(index: int, conversation_id: str, exc: VantaxError) -> SendOutcome:
    return SendOutcome(
        index, conversation_id, error=f"{type(exc).__name__}: {exc}", maybe_sent=maybe_created(exc)
    )


def maybe_created(exc: VantaxError) -> bool:
    """Whether a failed create may have created the message (no answer, or 500/502/504, or a bad 2xx)."""
    if isinstance(exc, VantaxTransportError):
        return exc.maybe_sent
    status = exc.status_code
    return status is not None and (status in POST_MAYBE_CREATED or 200 <= status < 300)
