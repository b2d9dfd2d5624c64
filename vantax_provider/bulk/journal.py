"""
What a bulk send remembers across tries of one task instance, in ``task_state_store``.

A message is known by its identity: 8 bytes of a SHA-256 of its idempotency key, which is
derived from the task instance and the rendered message (or is the user's own key), never
from a position in the list.  The journal holds:

- ``done``: created (the service answered with a message id), with, for each, its
  ``[conversation_id, message_id]`` (``messages``), so that a later try can wait for its delivery;
- ``maybe``: a failure left it unknown whether the message was created (timeout, 5xx after
  the request reached the service);
- ``intent``: about to be sent or in flight (the write-ahead).  No request starts before its
  identity is in the stored intent, and the intent holds at most ``max_uncertain`` identities
  that are not done (by default ``max_concurrency``, the requests in flight), so after a crash
  at most that many are uncertain.

Stored values: the head ``vantax_bulk_journal`` (the intent, and the entries finished since the
last segment) and sealed segments ``vantax_bulk_journal_<n>``, written once.  Entries move from
the head to a segment of at most ``SEGMENT_BYTES`` once the head has no room for them next to the
intent, so a write sends the head plus, now and then, a segment, and every value stays under
``HEAD_BYTES`` (the store takes up to 64 KB), however long the conversation ids.

A store that fails never lets a request go unrecorded: a read at the start is tried again with
backoff for up to ``STORE_TIMEOUT`` seconds and then fails the try before any request; a write
that fails holds the requests waiting for it, is tried again with backoff, and after
``STORE_TIMEOUT`` seconds of failures stops the batch.  Both raise :class:`JournalUnavailable`,
which Airflow retries.  Design notes are in docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from vantax_provider._compat import AirflowException
from vantax_provider.bulk._segments import (
    HEAD_BYTES,
    HEAD_KEY,
    ID_BYTES,
    ID_CHARS,
    MAX_WINDOW,
    SEGMENT_BYTES,
    VERSION,
    Message,
    encode,
    identity,
    message_bytes,
    pack,
    seal,
    segment_key,
    stored_messages,
    unpack,
)

if TYPE_CHECKING:
    from vantax_provider.task_state import StateStore

log = logging.getLogger(__name__)

#: Names other modules and tests take from here.
__all__ = [
    "HEAD_BYTES", "HEAD_KEY", "MAX_WINDOW", "SEGMENT_BYTES", "Journal", "JournalUnavailable",
    "identity", "unpack",
]  # fmt: skip

#: Seconds a store that fails is tried again (with backoff) before the try fails.
STORE_TIMEOUT = 30.0
#: The first wait before a failed store call is tried again; doubled each time, at most 8 s.
STORE_BACKOFF = 0.5


class JournalUnavailable(AirflowException):
    """The task state store could not be read or written within the journal's bound; retryable."""


class Journal:
    """
    The write-ahead journal of one bulk send; a no-op without a state store.

    :param store: the task's ``task_state_store``, or None (Airflow before 3.3).
    :param window: most identities in flight or admitted and not finished (``max_uncertain``,
        at most ``MAX_WINDOW`` so that the head stays under the store's 64 KB limit).
    :param interval: seconds between two writes when no request waits for admission.
    :param keep_messages: read the messages earlier tries created (for a wait for delivery).
    :param store_timeout: seconds a failing store is tried again before the try fails
        (``STORE_TIMEOUT`` by default).
    :param store_backoff: the first wait between two attempts (``STORE_BACKOFF`` by default).
    """

    def __init__(
        self,
        store: StateStore | None,
        *,
        window: int,
        interval: float,
        keep_messages: bool = False,
        store_timeout: float | None = None,
        store_backoff: float | None = None,
    ) -> None:
        self.store = store
        if window > MAX_WINDOW:
            raise ValueError(
                f"max_uncertain must be at most {MAX_WINDOW} (the journal's window), got {window}."
            )
        self.window = window
        self.interval = interval
        self.keep_messages = keep_messages
        self.store_timeout = STORE_TIMEOUT if store_timeout is None else store_timeout
        self.store_backoff = STORE_BACKOFF if store_backoff is None else store_backoff
        # What earlier tries left: looked up as recipients are reached.
        self.prior_done: set[int] = set()
        self.prior_maybe: set[int] = set()
        self.prior_uncertain: set[int] = set()
        #: identity -> [conversation_id, message_id] of messages earlier tries created (keep_messages).
        self.prior_messages: dict[int, Message] = {}
        self.loaded = store is None
        # This try's state, as it will be written.
        self.sealed = 0
        # Entries finished since the last sealed segment: identities (8 bytes each) in the order they
        # finished, and the message of each done one; their size in a stored value.
        self.head_done = bytearray()
        self.head_messages: list[Message | None] = []
        self.head_maybe = bytearray()
        self.entry_bytes = 0
        self.intent: set[int] = set()
        self.dirty = False
        self.broken: JournalUnavailable | None = None  # the store failed past the bound
        self.writes = 0
        self.write_failures = 0
        self.write_seconds = 0.0
        self._last_error = ""
        self._waiting: list[asyncio.Future[None]] = []
        self._failing_since: float | None = None
        self._streak = 0  # failed writes in a row
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._last_failure_log = 0.0

    def _backoff(self, attempt: int) -> float:
        return float(min(self.store_backoff * 2 ** max(attempt - 1, 0), max(self.store_backoff, 8.0)))

    # -- reading what earlier tries left ---------------------------------------------------------

    def load(self) -> None:
        """
        Read the journal of earlier tries, trying a failing store again with backoff; raise
        :class:`JournalUnavailable` (nothing was sent) when it still fails after ``store_timeout``.
        """
        if self.store is None or self.loaded:
            return
        started, attempt = time.monotonic(), 0
        while True:
            attempt += 1
            try:
                self._read(self.store)
            except Exception as exc:  # the store is Airflow's: any failure of it may pass
                delay, elapsed = self._backoff(attempt), time.monotonic() - started
                if elapsed + delay > self.store_timeout:
                    raise JournalUnavailable(
                        f"This task's bulk journal could not be read from the task_state_store "
                        f"({type(exc).__name__}: {str(exc)[:200]}; {attempt} attempts in {elapsed:.1f} s). "
                        "Nothing was sent by this try: without the journal it could send again what an "
                        "earlier try sent. A retry of the task tries again."
                    ) from None
                log.warning(
                    "Reading the bulk journal from the task state store failed (%s); trying again in %.2fs.",
                    type(exc).__name__, delay,
                )  # fmt: skip
                time.sleep(delay)
                continue
            self.loaded = True
            return

    def _read(self, store: StateStore) -> None:
        """Read everything first, then keep it: a read that fails half-way leaves nothing behind."""
        head = store.get(HEAD_KEY)
        if head is None:
            return
        messages: dict[int, Message] = {}
        try:
            if not isinstance(head, dict) or head.get("v") not in (1, VERSION):
                raise ValueError("unknown format")
            sealed = int(head.get("sealed", 0))
            head_done, head_maybe = unpack(head.get("done")), unpack(head.get("maybe"))
            maybe = list(head_maybe)
            head_messages = stored_messages(head.get("messages"), len(head_done))
            intent = unpack(head.get("intent"))
            done: list[int] = []
            for number in range(sealed):
                segment = store.get(segment_key(number))
                if not isinstance(segment, dict):
                    raise ValueError(f"segment {number} is missing")
                segment_done = unpack(segment.get("done"))
                done += segment_done
                maybe += unpack(segment.get("maybe"))
                if self.keep_messages:
                    pairs = stored_messages(segment.get("messages"), len(segment_done))
                    messages.update((i, m) for i, m in zip(segment_done, pairs, strict=True) if m)
        except (ValueError, TypeError) as exc:
            log.warning("Ignoring an unreadable bulk journal in the task state store: %s.", exc)
            return
        if self.keep_messages:
            messages.update((i, m) for i, m in zip(head_done, head_messages, strict=True) if m)
        self.prior_done = set(done) | set(head_done)
        self.prior_maybe = set(maybe) - self.prior_done
        self.prior_uncertain = set(intent) - self.prior_done - self.prior_maybe
        self.prior_messages = messages
        # This try writes a new head that keeps what earlier tries knew: the sealed segments stay,
        # the head's entries carry over, and what was in flight at a crash stays uncertain until known.
        self.sealed = sealed
        self.head_done = bytearray(b"".join(i.to_bytes(ID_BYTES, "big") for i in head_done))
        self.head_messages = head_messages
        carried = [*head_maybe, *sorted(self.prior_uncertain)]
        self.head_maybe = bytearray(b"".join(i.to_bytes(ID_BYTES, "big") for i in carried))
        self.entry_bytes = ID_CHARS * (len(head_done) + len(carried)) + sum(map(message_bytes, head_messages))

    def prior(self, ident: int) -> str | None:
        """``"done"``, ``"maybe"`` (uncertain after an earlier try) or None (not sent before)."""
        if ident in self.prior_done:
            return "done"
        if ident in self.prior_maybe or ident in self.prior_uncertain:
            return "maybe"
        return None

    def prior_message(self, ident: int) -> Message | None:
        """The message an earlier try created under this identity (taken: asked once per identity)."""
        return self.prior_messages.pop(ident, None)

    # -- this try --------------------------------------------------------------------------------

    def admit(self, ident: int) -> asyncio.Future[None] | None:
        """
        Add the message to the intent; what it returns is done once the message may be sent: its
        identity is in the stored intent (None: it may be sent now, there is no store to wait for).
        It fails with :class:`JournalUnavailable` when the store could not be written in time.
        """
        if self.broken is not None:
            raise self.broken
        self.intent.add(ident)
        self.dirty = True
        if self.store is None:
            return None
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        self._wake.set()
        return future

    def finished(
        self, ident: int, *, sent: bool, maybe: bool = False, message: Message | None = None
    ) -> None:
        """Record the outcome of an admitted message (written with the next write)."""
        self.intent.discard(ident)
        if self.store is None:  # nothing to write it to: keep nothing
            return
        if sent:
            self.head_done += ident.to_bytes(ID_BYTES, "big")
            self.head_messages.append(message)
            self.entry_bytes += ID_CHARS + message_bytes(message)
        elif maybe:
            self.head_maybe += ident.to_bytes(ID_BYTES, "big")
            self.entry_bytes += ID_CHARS
        self.dirty = True

    def start(self) -> None:
        """Start the writer (in the running event loop)."""
        if self.store is not None:
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        """The writer: admits waiting requests with one write, or writes every ``interval``."""
        try:
            while not self._stopping and self.broken is None:
                if self._failing_since is None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout=self.interval)
                else:  # the store failed: the next attempt waits for the backoff, not for new requests
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), timeout=self._backoff(self._streak))
                self._wake.clear()
                if not self._stopping:
                    await self.flush()
        except Exception as exc:  # a bug here: stop the batch rather than send without the write-ahead
            log.exception("The bulk journal writer stopped.")
            self._give_up(JournalUnavailable(f"The bulk journal writer stopped: {type(exc).__name__}."))

    async def flush(self) -> bool:
        """One write of what changed; the requests it lists may start once it succeeded."""
        if self.store is None or not (self.dirty or self._waiting):
            return True
        waiting, self._waiting = self._waiting, []
        ok = False
        try:
            ok = await self._write()
        finally:
            if not ok:
                self._waiting[:0] = waiting  # not written: they keep waiting
        if ok:
            self._failing_since, self._streak = None, 0
            for future in waiting:
                if not future.done():
                    future.set_result(None)
            return True
        now = time.monotonic()
        self._failing_since = now if self._failing_since is None else self._failing_since
        self._streak += 1
        elapsed = now - self._failing_since
        if elapsed + self._backoff(self._streak) > self.store_timeout:
            self._give_up(
                JournalUnavailable(
                    f"The bulk journal could not be written to the task_state_store for {elapsed:.1f} s "
                    f"({self._last_error}; {self.write_failures} failed writes). The bulk send stopped, "
                    "since no request starts before the journal lists it; what this try recorded stays "
                    "on record, and a retry of the task sends the rest."
                )
            )
        return False

    def _give_up(self, error: JournalUnavailable) -> None:
        """Fail the requests waiting for a write, and every later admission."""
        if self.broken is None:
            self.broken = error
        waiting, self._waiting = self._waiting, []
        for future in waiting:
            if not future.done():
                future.set_exception(self.broken)
                future.exception()  # retrieved here: a request that never asks must not log it

    async def close(self) -> None:
        """Stop the writer, then the last write, tried again within the bound: what finished is on record."""
        self._stopping = True
        self._stop.set()
        self._wake.set()
        if self._task is not None:
            await self._task  # never cancelled mid-write: one store call at a time
        while not await self.flush():
            if self.broken is not None:
                log.error(
                    "The bulk journal could not be written at the end (%d failed writes): a retry of this "
                    "task treats the messages in flight since the last good write as uncertain.",
                    self.write_failures,
                )
                return
            await asyncio.sleep(self._backoff(self._streak))

    async def _write(self) -> bool:
        assert self.store is not None
        self.dirty = False
        intent = pack(self.intent)
        done, maybe, messages = bytes(self.head_done), bytes(self.head_maybe), self.head_messages
        room = min(SEGMENT_BYTES, HEAD_BYTES - len(intent))
        values, cut_done, cut_maybe, moved = seal(done, maybe, messages, self.entry_bytes, room, self.sealed)
        segments = len(values)
        head = {
            "v": VERSION,
            "sealed": self.sealed + segments,
            "done": encode(done[cut_done * ID_BYTES :]),
            "maybe": encode(maybe[cut_maybe * ID_BYTES :]),
            "messages": messages[cut_done : len(done) // ID_BYTES],
            "intent": intent,
        }
        values.append((HEAD_KEY, head))
        started = time.perf_counter()
        try:
            await asyncio.to_thread(_set_all, self.store, values)
        except Exception as exc:  # the store is Airflow's: log, stay dirty, try again after a backoff
            self.dirty = True
            self.write_failures += 1
            self._last_error = f"{type(exc).__name__}: {str(exc)[:200]}"
            now = time.monotonic()
            if now - self._last_failure_log >= 10 * self.interval:
                self._last_failure_log = now
                log.warning(
                    "Writing the bulk journal to the task state store failed (%s, %d failures so far); "
                    "requests wait for it, and it is tried again with backoff.",
                    type(exc).__name__, self.write_failures,
                )  # fmt: skip
            return False
        self.write_seconds += time.perf_counter() - started
        self.writes += len(values)
        if self.write_failures and self._streak:
            log.info("The bulk journal is written again after %d failed writes.", self._streak)
        self.sealed += segments
        del self.head_done[: cut_done * ID_BYTES]
        del self.head_messages[:cut_done]
        del self.head_maybe[: cut_maybe * ID_BYTES]
        self.entry_bytes -= moved
        return True


def _set_all(store: StateStore, values: list[tuple[str, dict[str, Any]]]) -> None:
    for key, value in values:
        store.set(key, value)
