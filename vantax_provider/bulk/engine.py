"""
The bulk engine: many sends through one hook, concurrently.

One feeder takes items from the iterator as slots free up (or a few ahead) and a fixed pool of
senders sends them, so memory stays flat however many recipients there are (10,000 recipients
never means 10,000 coroutines).  Pacing, Retry-After pauses and retries stay in the hook
(``asend_request``); nothing here retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Coroutine, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from vantax_provider._arguments import finite_number, whole_number
from vantax_provider.bulk.types import BulkItem, BulkProgress, BulkSender, Ledger, SendOutcome
from vantax_provider.contract import POST_MAYBE_CREATED
from vantax_provider.exceptions import VantaxAuthenticationError, VantaxError, VantaxTransportError

if TYPE_CHECKING:
    from vantax_provider.models import Message

log = logging.getLogger(__name__)


async def send_many(
    sender: BulkSender,
    items: Iterable[BulkItem],
    ledger: Ledger,
    *,
    max_concurrency: int,
    ahead: int,
    tick_interval: float,
    repeat_uncertain: bool,
) -> BulkProgress:
    """
    Send every item with at most ``max_concurrency`` requests in flight.

    ``items`` is consumed lazily, so a generator that renders and validates recipients on
    demand keeps memory flat.  ``ledger`` is told of each item taken (``admit``: what it returns
    is awaited before the item's request starts, a write-ahead record), of each finished send
    (``record``: a :class:`VantaxError` becomes a failed outcome; any other exception stops the
    batch), of each item taken whose request never started when the batch stops on an error
    (``unsent``: known not sent), and every ``tick_interval`` seconds and once more at the end,
    also after an error (``tick``), so a checkpoint written there covers everything that finished.
    Items are taken when a slot is free, or up to ``ahead`` items earlier, so that a slow
    admission overlaps the requests in flight: at most ``max_concurrency + ahead`` items are
    taken and not finished.  A refused API key (401/403) stops the batch: its outcome is reported,
    no other request starts, the requests in flight finish and are reported, and the refusal is
    raised at the end (every other recipient would be refused the same way).
    ``repeat_uncertain=False`` never repeats a request that may have
    created its message (a read timeout, a 500/502/504), even under an idempotency key: for a
    service that does not deduplicate; such a failure is reported with ``maybe_sent``.
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
                unsent[item.index] = item
                taken.put_nowait((item, ledger.admit(item)))
        finally:  # the end, or an error: one stop sign per sender
            for _ in range(max_concurrency):
                taken.put_nowait(None)

    async def send() -> None:
        while (entry := await taken.get()) is not None:
            item, admission = entry
            if admission is not None and not refused:
                await admission
            if refused:
                break  # the item stays in unsent: known not sent
            del unsent[item.index]
            progress.in_flight += 1
            try:
                message = await sender.asend_request(
                    item.request, idempotency_key=item.key, repeat_uncertain=repeat_uncertain
                )
            except VantaxError as exc:
                outcome = _failed(item, exc)
                progress.failed += 1
                if isinstance(exc, VantaxAuthenticationError) and not refused:
                    refused.append(exc)
            else:
                outcome = _sent(item, message)
                progress.sent += 1
            finally:
                progress.in_flight -= 1
            ledger.record(outcome)
            window.release()

    try:
        await _run_pool(
            [feeder(), *(send() for _ in range(max_concurrency))], progress, ledger, tick_interval
        )
    finally:
        for item in unsent.values():  # empty unless the batch stopped on an error
            ledger.unsent(item)
    if refused:
        raise refused[0]
    return progress


async def _run_pool(
    coroutines: list[Coroutine[Any, Any, None]], progress: BulkProgress, ledger: Ledger, tick_interval: float
) -> None:
    workers = [asyncio.create_task(c) for c in coroutines]
    ticker = asyncio.create_task(_tick_forever(ledger, progress, tick_interval))
    try:
        await asyncio.gather(*workers)
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        progress.finished = True
        await ledger.tick(progress)  # the last checkpoint, also after an error


async def _tick_forever(ledger: Ledger, progress: BulkProgress, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        await ledger.tick(progress)


def _sent(item: BulkItem, message: Message) -> SendOutcome:
    return SendOutcome(
        item.index, item.request.conversation_id, item.identity, message_id=message.id, status=message.status
    )


def _failed(item: BulkItem, exc: VantaxError) -> SendOutcome:
    return SendOutcome(
        item.index, item.request.conversation_id, item.identity,
        error=f"{type(exc).__name__}: {exc}", maybe_sent=maybe_created(exc),
    )  # fmt: skip


def maybe_created(exc: VantaxError) -> bool:
    """Whether a failed create may have created the message (no answer, or 500/502/504, or a bad 2xx)."""
    if isinstance(exc, VantaxTransportError):
        return exc.maybe_sent
    status = exc.status_code
    return status is not None and (status in POST_MAYBE_CREATED or 200 <= status < 300)
