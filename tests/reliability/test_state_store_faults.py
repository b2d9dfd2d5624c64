"""
State-store faults under a bulk send: ``set``/``get`` raising or slow, or no store at all.

Each case runs one try of a 60-recipient bulk send with the faulty store (the batch must
complete, every recipient sent), then a retry with the store working again over the same data.
Counted on the emulator: the retry creates no duplicate.

Cases where the faulty try could record something run against a service that ignores
``Idempotency-Key`` (``deduplicate=False``), so the journal alone must prevent the duplicates.
Cases where the store never took a write (``set`` always raising, ``get`` always raising, no
store) leave the retry nothing to go on: it sends again under the same keys, and only a service
that deduplicates prevents duplicates; those run against the deduplicating emulator and count
the replays.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.reliability._support import MemoryStateStore, figures, make_context
from vantax_provider.emulator.testing import Emulator
from vantax_provider.operators.vantax_bulk import VantaxBulkSendMessageOperator

N = 60


class StoreDown(Exception):
    """What a failing state store raises (the real one raises whatever its transport raises)."""


@dataclass(frozen=True)
class Case:
    name: str
    fails_set: Callable[[int], bool] = lambda call: False
    fails_get: Callable[[int], bool] = lambda call: False
    slow_set: float = 0.0
    slow_get: float = 0.0
    no_store: bool = False
    #: The faulty try left a usable journal, so the retry must send nothing even without deduplication.
    recorded: bool = True


CASES = [
    Case("set-fails-once", fails_set=lambda c: c == 2),
    Case("set-fails-every-other-call", fails_set=lambda c: c % 2 == 0),
    Case("set-fails-first-4-calls", fails_set=lambda c: c <= 4),
    Case("set-slow-100ms", slow_set=0.1),
    Case("get-fails-once", fails_get=lambda c: c == 1),
    Case("get-slow-300ms", slow_get=0.3),
    Case("set-slow-and-failing", slow_set=0.05, fails_set=lambda c: c % 3 == 0),
    Case("set-always-fails", fails_set=lambda c: True, recorded=False),
    Case("get-always-fails", fails_get=lambda c: True, recorded=False),
    Case("no-store", no_store=True, recorded=False),
]


class FaultyStore:
    """Wraps a working store with the case's faults; counts calls and faults."""

    def __init__(self, inner: MemoryStateStore, case: Case) -> None:
        self.inner, self.case = inner, case
        self.sets = self.gets = self.faults = 0

    def get(self, key: str, default: Any = None) -> Any:
        self.gets += 1
        time.sleep(self.case.slow_get)
        if self.case.fails_get(self.gets):
            self.faults += 1
            raise StoreDown("get failed")
        return self.inner.get(key, default)

    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        self.sets += 1
        time.sleep(self.case.slow_set)
        if self.case.fails_set(self.sets):
            self.faults += 1
            raise StoreDown("set failed")
        self.inner.set(key, value, retention=retention)

    def delete(self, key: str) -> None:
        self.inner.delete(key)


def _op() -> VantaxBulkSendMessageOperator:
    return VantaxBulkSendMessageOperator(
        task_id="store_faults", recipients=[{"cid": f"conv_sf_{i:02d}", "n": i} for i in range(N)],
        conversation_id="{{ recipient.cid }}", channel="email", subject="s", content="Hi {{ recipient.n }}",
        max_concurrency=8, checkpoint_interval=0.05,
    )  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_state_store_faults_never_stop_the_batch_nor_duplicate_on_retry(
    vantax_emulator: Emulator, fast_conn: Any, case: Case
) -> None:
    emu = vantax_emulator
    fast_conn()
    emu.configure(deduplicate=not case.recorded, latency_ms=10)
    data = MemoryStateStore()
    faulty = FaultyStore(data, case)
    started = time.monotonic()
    first = _op().execute(make_context("store_faults", store=None if case.no_store else faulty))
    seconds = time.monotonic() - started
    assert first["sent"] == N and first["failed"] == 0, first  # the batch completes

    retry = _op().execute(make_context("store_faults", store=None if case.no_store else data))
    created = Counter(m["conversation_id"] for m in emu.messages())
    duplicates = sum(n - 1 for n in created.values())
    assert len(created) == N and duplicates == 0, (case.name, duplicates)
    if case.recorded:
        assert retry["skipped_already_sent"] == N and retry["sent"] == 0, retry
    else:
        assert emu.stats()["replayed"] == N  # re-sent under the same keys; the service deduplicated

    f = figures("state-store-faults")
    f.cases += 1
    f.faults_applied += faulty.faults
    f.survived += 1
    f.duplicates += duplicates
    f.extra["slowest_try_s"] = max(f.extra.get("slowest_try_s", 0), round(seconds, 2))
    f.extra["replayed_by_service"] = f.extra.get("replayed_by_service", 0) + emu.stats()["replayed"]
