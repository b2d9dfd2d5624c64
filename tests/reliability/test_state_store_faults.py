"""
State-store faults under a bulk send: ``set``/``get`` raising or slow, or no store at all.

The rule under test: no request starts without a stored intent.  A store that fails for a while
is tried again with backoff and the batch completes; one that stays down fails the try with a
retryable error (before any request when it cannot be read, holding its requests when it cannot
be written), never sending without a record.  Each case then runs a retry with the store working
again over the same data, against a service that ignores ``Idempotency-Key``
(``deduplicate=False``), so that the journal alone must prevent the duplicates; counted on the
emulator.  Without a store (Airflow < 3.3) the retry sends again under the same keys, and only a
service that deduplicates prevents duplicates: that case counts the replays.

The last tests add a crash: try 1 runs in its own process and is SIGKILLed, with a store that fails
its writes, or before a retry whose first reads fail.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.reliability._support import (
    FileStateStore,
    MemoryStateStore,
    created_per_conversation,
    figures,
    make_context,
    settle,
)
from vantax_provider._compat import AirflowException, AirflowFailException
from vantax_provider.bulk.journal import JournalUnavailable
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
    #: The store stays down: the try fails, retryably, having sent nothing.
    stops: bool = False


CASES = [
    Case("set-fails-once", fails_set=lambda c: c == 2),
    Case("set-fails-every-other-call", fails_set=lambda c: c % 2 == 0),
    Case("set-fails-first-4-calls", fails_set=lambda c: c <= 4),
    Case("set-slow-100ms", slow_set=0.1),
    Case("get-fails-once", fails_get=lambda c: c == 1),
    Case("get-slow-300ms", slow_get=0.3),
    Case("set-slow-and-failing", slow_set=0.05, fails_set=lambda c: c % 3 == 0),
    Case("set-always-fails", fails_set=lambda c: True, stops=True),
    Case("get-always-fails", fails_get=lambda c: True, stops=True),
    Case("no-store", no_store=True),
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


@pytest.fixture
def quick_store_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The journal's store retries, shrunk: 10 ms first backoff, 1.5 s before it gives up."""
    from vantax_provider.bulk import journal as _bulk_journal

    monkeypatch.setattr(_bulk_journal, "STORE_BACKOFF", 0.01, raising=False)
    monkeypatch.setattr(_bulk_journal, "STORE_TIMEOUT", 1.5, raising=False)


def _op(**kwargs: Any) -> VantaxBulkSendMessageOperator:
    return VantaxBulkSendMessageOperator(
        task_id="store_faults", recipients=[{"cid": f"conv_sf_{i:02d}", "n": i} for i in range(N)],
        conversation_id="{{ recipient.cid }}", channel="email", subject="s", content="Hi {{ recipient.n }}",
        max_concurrency=8, checkpoint_interval=0.05, **kwargs,
    )  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_state_store_faults_never_send_without_a_record_nor_duplicate_on_retry(  # type: ignore[no-untyped-def]
    vantax_emulator: Emulator, fast_conn: Any, quick_store_retries, case: Case
) -> None:
    emu = vantax_emulator
    fast_conn()
    emu.configure(deduplicate=case.no_store, latency_ms=10)
    data = MemoryStateStore()
    faulty = FaultyStore(data, case)
    started = time.monotonic()
    if case.stops:
        with pytest.raises(JournalUnavailable, match="task_state_store"):
            _op().execute(make_context("store_faults", store=faulty))
        assert emu.stats()["requests"] == 0  # held: nothing went out without a stored intent
    else:
        first = _op().execute(make_context("store_faults", store=None if case.no_store else faulty))
        assert first["sent"] == N and first["failed"] == 0, first  # the batch completes
    seconds = time.monotonic() - started

    retry = _op().execute(make_context("store_faults", store=None if case.no_store else data, try_number=2))
    created = Counter(m["conversation_id"] for m in emu.messages())
    duplicates = sum(n - 1 for n in created.values())
    assert len(created) == N and duplicates == 0, (case.name, duplicates)
    if case.stops:
        assert retry["sent"] == N, retry
    elif case.no_store:
        assert emu.stats()["replayed"] == N  # re-sent under the same keys; the service deduplicated
    else:
        assert retry["skipped_already_sent"] == N and retry["sent"] == 0, retry

    f = figures("state-store-faults")
    f.cases += 1
    f.faults_applied += faulty.faults
    f.survived += 1
    f.duplicates += duplicates
    f.extra["slowest_try_s"] = max(f.extra.get("slowest_try_s", 0), round(seconds, 2))
    f.extra["replayed_by_service"] = f.extra.get("replayed_by_service", 0) + emu.stats()["replayed"]


# -- a store that fails around a crash: no request starts without a stored intent --------------

REPO = Path(__file__).resolve().parents[2]
CRASH_N = 200
BOUND = 8  # max_concurrency = max_uncertain of the worker's operator


def _crash_op(on_uncertain: str) -> VantaxBulkSendMessageOperator:
    from tests.reliability._store_crash_worker import operator

    return operator(CRASH_N, on_uncertain)  # type: ignore[no-any-return]


def _crashed_try(emu: Emulator, folder: Path, on_uncertain: str, *, fail_sets_from: int = 0, at: int) -> int:
    """
    Run try 1 in its own process and SIGKILL it once ``at`` messages exist, or once nothing more has
    been created for 1.5 s (a try that holds its requests); returns how many exist after the kill.
    """
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
    }
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.reliability._store_crash_worker", str(folder), str(CRASH_N),
         on_uncertain, str(fail_sets_from)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        last, quiet_since = -1, time.monotonic()
        while True:
            created = emu.stats()["created"]
            if created != last:
                last, quiet_since = created, time.monotonic()
            if created >= at or (created > 0 and time.monotonic() - quiet_since > 1.5):
                break
            assert child.poll() is None, "try 1 ended before it could be killed"
            assert time.monotonic() < deadline, "try 1 never got going"
            time.sleep(0.02)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.communicate(timeout=30)
    settle(emu)
    created_at_kill = emu.stats()["created"]
    assert created_at_kill < CRASH_N, "try 1 finished before the kill"
    return created_at_kill


def _check_nobody_twice(emu: Emulator, on_uncertain: str, results: list[dict[str, Any]]) -> int:
    """Duplicates within the bound (none with skip); every recipient created or listed maybe_sent."""
    created = created_per_conversation(emu)
    duplicates = sum(n - 1 for n in created.values())
    maybe = {o["conversation_id"] for r in results for o in r["outcomes"] if o["outcome"] == "maybe_sent"}
    everyone = {f"conv_sc_{i:04d}" for i in range(CRASH_N)}
    assert set(created) <= everyone and everyone - set(created) <= maybe, sorted(
        everyone - set(created) - maybe
    )
    if on_uncertain == "skip":
        assert duplicates == 0, [c for c, n in created.items() if n > 1]
        assert len(maybe) <= BOUND
    else:
        assert duplicates <= BOUND, (duplicates, [c for c, n in created.items() if n > 1])
    return duplicates


@pytest.mark.airflow_3_3  # the journal's guarantees hold where there is a state store
@pytest.mark.parametrize("on_uncertain", ["skip", "resend"])
def test_reads_failing_at_the_start_of_a_retry_after_a_crash_send_nobody_twice(  # type: ignore[no-untyped-def]
    vantax_emulator: Emulator, fast_conn: Any, tmp_path: Path, quick_store_retries, on_uncertain: str
) -> None:
    emu = vantax_emulator
    fast_conn()
    emu.configure(deduplicate=False, latency_ms=30)
    folder = tmp_path / "store"
    created_at_kill = _crashed_try(emu, folder, on_uncertain, at=24)
    posts_before = sum(1 for r in emu.requests() if r["method"] == "POST")

    # Try 2: the store's first six reads fail (more than one read's worth of attempts).
    faulty = FaultyStore(FileStateStore(folder), Case("first-reads-fail", fails_get=lambda c: c <= 6))
    second = _crash_op(on_uncertain).execute(make_context("store_crash", store=faulty, try_number=2))
    # Try 3, with a healthy store, sends nothing at all.
    third = _crash_op(on_uncertain).execute(
        make_context("store_crash", store=FileStateStore(folder), try_number=3)
    )
    duplicates = _check_nobody_twice(emu, on_uncertain, [second, third])
    assert faulty.faults == 6
    assert third["sent"] == 0 and third["failed"] == 0, third
    assert second["sent"] + second["skipped_already_sent"] + second["maybe_sent"] == CRASH_N
    posts_after = sum(1 for r in emu.requests() if r["method"] == "POST") - posts_before
    assert posts_after == second["sent"]  # try 3 posted nothing
    f = figures("state-store-faults/crash")
    f.cases += 1
    f.faults_applied += faulty.faults + 1
    f.survived += 1
    f.duplicates += duplicates
    f.extra[f"reads_fail_{on_uncertain}"] = (
        f"killed_at:{created_at_kill}/skipped:{second['skipped_already_sent']}/sent:{second['sent']}/"
        f"maybe:{second['maybe_sent']}/duplicates:{duplicates}"
    )


@pytest.mark.airflow_3_3
@pytest.mark.parametrize("on_uncertain", ["skip", "resend"])
def test_writes_failing_then_a_crash_leave_at_most_max_uncertain_uncertain(  # type: ignore[no-untyped-def]
    vantax_emulator: Emulator, fast_conn: Any, tmp_path: Path, on_uncertain: str
) -> None:
    """Try 1's store fails every write from its 6th on; the try is killed; the retry's store works."""
    emu = vantax_emulator
    fast_conn()
    emu.configure(deduplicate=False, latency_ms=30)
    folder = tmp_path / "store"
    created_at_kill = _crashed_try(emu, folder, on_uncertain, fail_sets_from=6, at=150)
    second = _crash_op(on_uncertain).execute(
        make_context("store_crash", store=FileStateStore(folder), try_number=2)
    )
    duplicates = _check_nobody_twice(emu, on_uncertain, [second])
    assert second["sent"] + second["skipped_already_sent"] + second["maybe_sent"] == CRASH_N
    f = figures("state-store-faults/crash")
    f.cases += 1
    f.faults_applied += 2
    f.survived += 1
    f.duplicates += duplicates
    f.extra[f"writes_fail_{on_uncertain}"] = (
        f"killed_at:{created_at_kill}/skipped:{second['skipped_already_sent']}/sent:{second['sent']}/"
        f"maybe:{second['maybe_sent']}/duplicates:{duplicates}"
    )


@pytest.mark.airflow_3_3
def test_a_store_that_stays_down_fails_the_try_retryably_and_a_later_try_completes(  # type: ignore[no-untyped-def]
    vantax_emulator: Emulator, fast_conn: Any, quick_store_retries
) -> None:
    """Writes fail from the 4th on and never come back: the try holds its requests, then fails."""
    emu = vantax_emulator
    fast_conn()
    emu.configure(deduplicate=False, latency_ms=10)
    data = MemoryStateStore()
    faulty = FaultyStore(data, Case("set-fails-from-4", fails_set=lambda c: c >= 4))
    op = _op()
    with pytest.raises(AirflowException) as failed:
        op.execute(make_context("store_faults", store=faulty))
    assert not isinstance(failed.value, AirflowFailException)  # Airflow retries it
    text = str(failed.value)
    assert "task_state_store" in text and "could not be written" in text and len(text) < 1000, text
    sent_by_first = emu.stats()["created"]
    assert sent_by_first < N
    # A later try with the store back: everyone once, what try 1 recorded is skipped.
    retry = _op(on_uncertain="skip").execute(make_context("store_faults", store=data, try_number=2))
    created = created_per_conversation(emu)
    assert max(created.values()) == 1, [c for c, n in created.items() if n > 1]
    maybe = {o["conversation_id"] for o in retry["outcomes"] if o["outcome"] == "maybe_sent"}
    assert set(created) | maybe == {f"conv_sf_{i:02d}" for i in range(N)}
    assert len(maybe) <= 8 and retry["failed"] == 0


@pytest.mark.airflow_3_3
def test_a_store_that_cannot_be_read_fails_the_try_before_any_request(  # type: ignore[no-untyped-def]
    vantax_emulator: Emulator, fast_conn: Any, quick_store_retries
) -> None:
    emu = vantax_emulator
    fast_conn()
    data = MemoryStateStore()
    faulty = FaultyStore(data, Case("get-always-fails", fails_get=lambda c: True))
    with pytest.raises(AirflowException) as failed:
        _op().execute(make_context("store_faults", store=faulty))
    assert not isinstance(failed.value, AirflowFailException)
    assert "task_state_store" in str(failed.value) and "could not be read" in str(failed.value)
    assert emu.stats()["requests"] == 0  # nothing was sent
    assert _op().execute(make_context("store_faults", store=data, try_number=2))["sent"] == N
