"""
What a bulk send remembers across tries of one task instance, in ``task_state_store``.

A message is known by its identity: 8 bytes of a SHA-256 of its idempotency key, which is
derived from the task instance and the rendered message (or is the user's own key), never
from a position in the list.  The journal holds three sets of identities:

- ``done``: created (the service answered with a message id);
- ``maybe``: a failure left it unknown whether the message was created (timeout, 5xx after
  the request reached the service);
- ``intent``: about to be sent or in flight (the write-ahead).  No request starts before its
  identity is in the stored intent, and the intent holds at most ``max_uncertain`` identities
  that are not done (by default ``max_concurrency``, the requests in flight), so after a crash
  at most that many are uncertain.

Stored values: the head ``vantax_bulk_journal`` (``done`` and ``maybe`` since the last
segment, and ``intent``) and sealed segments ``vantax_bulk_journal_<n>`` of 1,024 entries
each, written once.  A write sends the head only (a few KB), plus a segment every 1,024
messages; every value stays far under the store's 64 KB limit.

Design notes are in docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vantax_provider.operators._state import StateStore

log = logging.getLogger(__name__)

HEAD_KEY = "vantax_bulk_journal"
VERSION = 1
ID_BYTES = 8
#: Entries (done + maybe) of the head moved to a sealed segment once there are this many.
SEAL_AT = 1024
#: Most identities in the stored intent: (SEAL_AT + MAX_WINDOW) * 8 bytes, base64, stay under 64 KB.
MAX_WINDOW = 4096
#: Attempts of the final write, and of each read at the start.
STORE_ATTEMPTS = 3


def identity(key: str) -> int:
    """The journal's identity of a message with this idempotency key."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:ID_BYTES], "big")


def pack(ids: Iterable[int]) -> str:
    return encode(b"".join(i.to_bytes(ID_BYTES, "big") for i in ids))


def encode(raw: bytes | bytearray) -> str:
    return base64.b64encode(raw).decode("ascii")


def unpack(text: Any) -> list[int]:
    raw = base64.b64decode(str(text or ""), validate=True)
    if len(raw) % ID_BYTES:
        raise ValueError("truncated identity list")
    return [int.from_bytes(raw[i : i + ID_BYTES], "big") for i in range(0, len(raw), ID_BYTES)]


def segment_key(number: int) -> str:
    return f"{HEAD_KEY}_{number}"


class Journal:
    """
    The write-ahead journal of one bulk send; a no-op without a state store.

    :param store: the task's ``task_state_store``, or None (Airflow before 3.3).
    :param window: most identities in flight or admitted and not finished (``max_uncertain``,
        at most ``MAX_WINDOW`` so that the head stays under the store's 64 KB limit).
    :param interval: seconds between two writes when no request waits for admission.
    """

    def __init__(self, store: StateStore | None, *, window: int, interval: float) -> None:
        self.store = store
        if window > MAX_WINDOW:
            raise ValueError(
                f"max_uncertain must be at most {MAX_WINDOW} (the journal's window), got {window}."
            )
        self.window = window
        self.interval = interval
        # What earlier tries left: looked up as recipients are reached.
        self.prior_done: set[int] = set()
        self.prior_maybe: set[int] = set()
        self.prior_uncertain: set[int] = set()
        self.loaded = store is None
        # This try's state, as it will be written.
        self.sealed = 0
        # Identities finished since the last sealed segment, 8 bytes each, in the order they finished.
        self.head_done = bytearray()
        self.head_maybe = bytearray()
        self.intent: set[int] = set()
        self.dirty = False
        self.failing = False  # the last write failed: do not hold requests back for the store
        self.writes = 0
        self.write_failures = 0
        self.write_seconds = 0.0
        self._waiting: list[tuple[int, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._last_failure_log = 0.0

    # -- reading what earlier tries left ---------------------------------------------------------

    def load(self) -> None:
        """Read the journal of earlier tries; a store that cannot be read is tried again later."""
        if self.store is None or self.loaded:
            return
        for attempt in range(STORE_ATTEMPTS):
            try:
                self._read(self.store)
            except Exception as exc:  # the store is Airflow's: any failure of it must not stop the send
                error = exc
                if attempt + 1 < STORE_ATTEMPTS:
                    time.sleep(0.1 * (attempt + 1))
                continue
            self.loaded = True
            return
        log.warning(
            "Could not read this task's bulk journal from the task state store (%s); sending under "
            "Idempotency-Keys meanwhile, and trying again before the first write.",
            type(error).__name__,
        )

    def _read(self, store: StateStore) -> None:
        head = store.get(HEAD_KEY)
        if head is None:
            return
        try:
            if not isinstance(head, dict) or head.get("v") != VERSION:
                raise ValueError("unknown format")
            sealed = int(head.get("sealed", 0))
            done, maybe = unpack(head.get("done")), unpack(head.get("maybe"))
            intent = unpack(head.get("intent"))
            for number in range(sealed):
                segment = store.get(segment_key(number))
                if not isinstance(segment, dict):
                    raise ValueError(f"segment {number} is missing")
                done += unpack(segment.get("done"))
                maybe += unpack(segment.get("maybe"))
        except (ValueError, TypeError) as exc:
            log.warning("Ignoring an unreadable bulk journal in the task state store: %s.", exc)
            return
        self.prior_done = set(done)
        self.prior_maybe = set(maybe) - self.prior_done
        self.prior_uncertain = set(intent) - self.prior_done - self.prior_maybe
        # This try writes a new head that keeps what earlier tries knew: the sealed segments stay,
        # the head's lists carry over, and what was in flight at a crash stays uncertain until known.
        self.sealed = sealed
        self.head_done = bytearray(base64.b64decode(str(head.get("done") or "")))
        self.head_maybe = bytearray(base64.b64decode(str(head.get("maybe") or "")))
        self.head_maybe += b"".join(i.to_bytes(ID_BYTES, "big") for i in sorted(self.prior_uncertain))

    def prior(self, ident: int) -> str | None:
        """``"done"``, ``"maybe"`` (uncertain after an earlier try) or None (not sent before)."""
        if ident in self.prior_done:
            return "done"
        if ident in self.prior_maybe or ident in self.prior_uncertain:
            return "maybe"
        return None

    # -- this try --------------------------------------------------------------------------------

    @property
    def gating(self) -> bool:
        """Whether a request waits until its identity is in the stored intent."""
        return self.store is not None and self.loaded and not self.failing

    def admit(self, ident: int) -> asyncio.Future[None] | None:
        """
        Add the message to the intent; what it returns is done once the message may be sent: its
        identity is in the stored intent (None: it may be sent now, there is no store to wait for).
        """
        self.intent.add(ident)
        self.dirty = True
        if not self.gating or self._stopping:
            return None
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((ident, future))
        self._wake.set()
        return future

    def finished(self, ident: int, *, sent: bool, maybe: bool = False) -> None:
        """Record the outcome of an admitted message (written with the next write)."""
        self.intent.discard(ident)
        if sent:
            self.head_done += ident.to_bytes(ID_BYTES, "big")
        elif maybe:
            self.head_maybe += ident.to_bytes(ID_BYTES, "big")
        self.dirty = True

    def start(self) -> None:
        """Start the writer (in the running event loop)."""
        if self.store is not None:
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        """The writer: admits waiting requests with one write, or writes every ``interval``."""
        try:
            while not self._stopping:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self.interval)
                self._wake.clear()
                await self.flush()
        except Exception:  # a bug here must not hold the batch: carry on without the write-ahead
            log.exception("The bulk journal writer stopped; sending goes on without it.")
            self.failing = True
            for _, future in self._waiting:
                if not future.done():
                    future.set_result(None)

    async def flush(self) -> bool:
        waiting, self._waiting = self._waiting, []
        ok = True
        try:
            if self.store is not None and (self.dirty or waiting):
                if not self.loaded:
                    await asyncio.to_thread(self.load)
                ok = self.loaded and await self._write()
        finally:  # also after a bug in the write: no request may wait for ever
            for _, future in waiting:
                if not future.done():
                    future.set_result(None)  # admitted: written, or the store failed and we carry on
        return ok

    async def close(self) -> None:
        """Stop the writer, then the last write, with a few attempts: everything finished is on record."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task  # never cancelled mid-write: one store call at a time
        for attempt in range(STORE_ATTEMPTS):
            if await self.flush() or self.store is None or not self.loaded:
                return
            await asyncio.sleep(0.2 * (attempt + 1))
        log.error(
            "The bulk journal could not be written at the end (%d failed writes): a retry of this task "
            "may send again, under the same Idempotency-Keys, what this try sent since the last good write.",
            self.write_failures,
        )

    async def _write(self) -> bool:
        assert self.store is not None
        self.dirty = False
        done, maybe = bytes(self.head_done), bytes(self.head_maybe)
        values: list[tuple[str, dict[str, Any]]] = []
        moved_done = moved_maybe = 0  # bytes moved into full segments of SEAL_AT entries
        full = SEAL_AT * ID_BYTES
        while len(done) - moved_done + len(maybe) - moved_maybe >= full:
            d = done[moved_done : moved_done + full]
            m = maybe[moved_maybe : moved_maybe + full - len(d)]
            values.append((segment_key(self.sealed + len(values)), {"done": encode(d), "maybe": encode(m)}))
            moved_done, moved_maybe = moved_done + len(d), moved_maybe + len(m)
        segments = len(values)
        head = {
            "v": VERSION,
            "sealed": self.sealed + segments,
            "done": encode(done[moved_done:]),
            "maybe": encode(maybe[moved_maybe:]),
            "intent": pack(self.intent),
        }
        values.append((HEAD_KEY, head))
        started = time.perf_counter()
        try:
            await asyncio.to_thread(_set_all, self.store, values)
        except Exception as exc:  # the store is Airflow's: log, stay dirty, try again at the next tick
            self.dirty = True
            self.write_failures += 1
            self.failing = True
            now = time.monotonic()
            if now - self._last_failure_log >= 10 * self.interval:
                self._last_failure_log = now
                log.warning(
                    "Writing the bulk journal to the task state store failed (%s, %d failures so far); "
                    "sending goes on and the write is tried again in %.1fs.",
                    type(exc).__name__, self.write_failures, self.interval,
                )  # fmt: skip
            return False
        self.write_seconds += time.perf_counter() - started
        self.writes += len(values)
        if self.failing:
            log.info("The bulk journal is written again after %d failed writes.", self.write_failures)
            self.failing = False
        self.sealed += segments
        del self.head_done[:moved_done]
        del self.head_maybe[:moved_maybe]
        return True


def _set_all(store: StateStore, values: list[tuple[str, dict[str, Any]]]) -> None:
    for key, value in values:
        store.set(key, value)
