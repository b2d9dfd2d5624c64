"""
The types the bulk modules share: what is sent, what came of it, and who the engine talks to.

:class:`BulkItem` carries its own journal identity, so whoever records an outcome finds it on the
item, not in a table that one module fills and another empties.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from vantax_provider.models import Message, SendMessageRequest


@dataclass(frozen=True, slots=True)
class BulkItem:
    """
    One message to send.

    :param index: the recipient's position in the list.
    :param request: the validated request.
    :param key: its ``Idempotency-Key`` (None sends none).
    :param identity: its identity in the journal (8 bytes of a hash of the key).
    """

    index: int
    request: SendMessageRequest
    key: str | None
    identity: int


@dataclass(frozen=True)
class SendOutcome:
    """
    What happened to one message of a batch; never the body.

    :param index: the recipient's position in the batch.
    :param conversation_id: the conversation the message was posted into.
    :param identity: the message's journal identity (that of its :class:`BulkItem`).
    :param message_id: the created message's id, on success.
    :param status: its status as the create call returned it, on success.
    :param error: why it failed (field or HTTP reason), on failure.
    :param maybe_sent: the failure left it unknown whether the message was created.
    """

    index: int
    conversation_id: str
    identity: int = 0
    message_id: str | None = None
    status: str | None = None
    error: str | None = None
    maybe_sent: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class BulkProgress:
    """
    Live counters of a running batch, handed to :meth:`Progress.tick`.

    :param started: ``time.monotonic()`` when the batch started.
    """

    started: float
    sent: int = 0
    failed: int = 0
    in_flight: int = 0
    finished: bool = False

    @property
    def done(self) -> int:
        return self.sent + self.failed

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def rate(self) -> float:
        """Messages finished per second so far."""
        elapsed = self.elapsed
        return self.done / elapsed if elapsed > 0 else 0.0


class BulkSender(Protocol):
    """What the engine needs of a hook (:class:`VantaxHook` is one): a paced, retried async send."""

    async def asend_request(
        self,
        request: SendMessageRequest,
        *,
        idempotency_key: str | None = None,
        repeat_uncertain: bool = True,
    ) -> Message: ...


class Ledger(Protocol):
    """What the engine reports to while it sends (:class:`~vantax_provider.bulk.outcomes.Batch` is one)."""

    def admit(self, item: BulkItem) -> Awaitable[None] | None:
        """An item was taken; what this returns (if anything) is awaited before its request starts."""

    def record(self, outcome: SendOutcome) -> None:
        """A request finished."""

    def unsent(self, item: BulkItem) -> None:
        """An item was taken and its request never started (the batch stopped on an error)."""

    async def tick(self, progress: BulkProgress) -> None:
        """Every ``tick_interval`` seconds, and once more at the end (also after an error)."""
