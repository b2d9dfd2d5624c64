"""
Recipient lists that change between tries, with a crash in between, against a service that
ignores ``Idempotency-Key`` (``deduplicate=False``): what is counted is what the provider
prevents on its own.

Each scenario (seeded) runs three tries of one task instance over one state store:

1. the list as first produced, crashed after a random number of messages;
2. a changed list (rows inserted at the top, deleted, reordered, repeated; one or several of
   these), crashed again;
3. another change, run to the end.

The crash is simulated in-process, as a SIGKILL would leave things: at the crash moment no
request starts any more, requests already on the wire still reach the service but their
answers are lost, and no state-store write lands from then on.  (A real SIGKILL of a task
process is in tests/bulk/test_crash_resume.py.)

Counted on the emulator per (conversation, body): with ``on_uncertain="skip"`` each is created
at most once, and each row of the last list is created or listed as ``maybe_sent``; with
``"resend"`` the duplicates are at most ``max_concurrency`` per crash and everyone is created.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from typing import Any

import pytest

from tests.reliability._support import MemoryStateStore, figures, make_context
from vantax_provider.emulator.testing import Emulator
from vantax_provider.hooks.vantax import VantaxHook
from vantax_provider.operators.vantax_bulk import VantaxBulkSendMessageOperator

SCENARIOS = 8
BASE = 40
CONCURRENCY = 4
MUTATIONS = ("insert", "delete", "reorder", "duplicate")
_SEND = VantaxHook.asend_request


class SimulatedCrash(Exception):
    """The task process died: nothing after it is seen by the task or the store."""


class CrashingStore(MemoryStateStore):
    """A store that stops accepting writes once the process has 'died'."""

    def __init__(self) -> None:
        super().__init__()
        self.dead = False

    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        if not self.dead:
            super().set(key, json.loads(json.dumps(value)))


def _crash_after(monkeypatch: pytest.MonkeyPatch, store: CrashingStore, created: int | None) -> None:
    """From the ``created``-th answer on, the process is dead (None: no crash)."""
    original = _SEND
    answers = 0
    store.dead = False

    async def send(self: VantaxHook, request: Any, **kwargs: Any) -> Any:
        nonlocal answers
        if store.dead:
            raise SimulatedCrash  # no request starts after the crash
        message = await original(self, request, **kwargs)  # reaches the service regardless
        answers += 1
        if created is not None and answers >= created:
            store.dead = True
        if store.dead:
            raise SimulatedCrash  # the answer is lost with the process
        return message

    monkeypatch.setattr(VantaxHook, "asend_request", send)


def _mutate(rows: list[dict[str, Any]], rng: random.Random, fresh: int) -> tuple[list[dict[str, Any]], str]:
    rows = list(rows)
    chosen = rng.sample(MUTATIONS, rng.randint(1, 3))
    for what in chosen:
        if what == "insert":
            rows[0:0] = [{"cid": f"conv_cl_new{fresh}_{i}", "n": i} for i in range(rng.randint(1, 4))]
        elif what == "delete":
            for _ in range(rng.randint(1, 4)):
                rows.pop(rng.randrange(len(rows)))
        elif what == "reorder":
            rng.shuffle(rows)
        else:
            for _ in range(rng.randint(1, 3)):
                rows.insert(rng.randrange(len(rows) + 1), dict(rng.choice(rows)))
    return rows, "+".join(chosen)


def _op(rows: list[dict[str, Any]], on_uncertain: str) -> VantaxBulkSendMessageOperator:
    return VantaxBulkSendMessageOperator(
        task_id="changing", recipients=rows, conversation_id="{{ recipient.cid }}", channel="email",
        subject="s", content="Hi {{ recipient.n }}", max_concurrency=CONCURRENCY,
        checkpoint_interval=0.05, on_uncertain=on_uncertain, max_failure_ratio=1.0,
    )  # fmt: skip


def _try(
    rows: list[dict[str, Any]], store: CrashingStore, on_uncertain: str, crash_at: int | None, mp: Any
) -> dict[str, Any] | None:
    _crash_after(mp, store, crash_at)
    try:
        return _op(rows, on_uncertain).execute(make_context("changing", store=store))
    except SimulatedCrash:
        return None


@pytest.mark.parametrize("on_uncertain", ["skip", "resend"])
def test_changing_lists_with_crashes_create_each_message_at_most_once(
    vantax_emulator: Emulator, fast_conn: Any, on_uncertain: str
) -> None:
    emu = vantax_emulator
    fast_conn()
    rng = random.Random(2026)
    worst = crashes = tries = 0
    maybe_listed = 0
    for scenario in range(SCENARIOS):
        emu.reset()
        emu.configure(deduplicate=False, latency_ms=15)
        with pytest.MonkeyPatch.context() as mp:
            store = CrashingStore()
            rows = [{"cid": f"conv_cl{scenario}_{i:02d}", "n": i} for i in range(BASE)]
            first = _try(rows, store, on_uncertain, rng.randint(1, BASE - 5), mp)
            rows, change1 = _mutate(rows, rng, 1)
            second = _try(rows, store, on_uncertain, rng.randint(1, 15), mp)
            rows, change2 = _mutate(rows, rng, 2)
            last = _try(rows, store, on_uncertain, None, mp)
        tries += 3
        crashes += (first is None) + (second is None)
        assert last is not None
        created = Counter(
            (m["conversation_id"], json.dumps(m["body"], sort_keys=True)) for m in emu.messages()
        )
        duplicates = sum(n - 1 for n in created.values())
        worst = max(worst, duplicates)
        wanted = {r["cid"]: r["n"] for r in rows}
        got = {cid for cid, _ in created}
        listed = {o["conversation_id"] for o in last["outcomes"] if o["outcome"] == "maybe_sent"}
        maybe_listed += len(listed)
        what = f"scenario {scenario} ({change1}, then {change2})"
        # Nobody lost without being listed.
        assert set(wanted) - got <= listed, (what, sorted(set(wanted) - got - listed))
        if on_uncertain == "skip":
            assert duplicates == 0, (what, [k for k, n in created.items() if n > 1])
            assert len(listed) <= 2 * CONCURRENCY, what
        else:
            assert duplicates <= CONCURRENCY * ((first is None) + (second is None)), (what, duplicates)
            assert not listed
        f = figures(f"changing-lists/{on_uncertain}")
        f.cases += 1
        f.faults_applied += (first is None) + (second is None)
        f.survived += 1
        f.duplicates += duplicates
    f.extra.update(
        {"tries": tries, "crashes": crashes, "worst_case_duplicates": worst, "maybe_sent": maybe_listed}
    )
