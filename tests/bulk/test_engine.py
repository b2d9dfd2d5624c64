"""The bulk engine on its own: a hook, an iterator of items and a ledger, against the emulator."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Iterator

import pytest

from vantax_provider.bulk.engine import send_many
from vantax_provider.bulk.types import BulkItem, BulkProgress, SendOutcome
from vantax_provider.emulator.testing import Emulator
from vantax_provider.exceptions import VantaxAuthenticationError
from vantax_provider.hooks.vantax import VantaxHook


class Ledger:
    """Keeps what the engine reports."""

    def __init__(self) -> None:
        self.outcomes: list[SendOutcome] = []
        self.unsent_items: list[BulkItem] = []
        self.ticks = 0

    def admit(self, item: BulkItem) -> Awaitable[None] | None:
        return None

    def record(self, outcome: SendOutcome) -> None:
        self.outcomes.append(outcome)

    def unsent(self, item: BulkItem) -> None:
        self.unsent_items.append(item)

    async def tick(self, progress: BulkProgress) -> None:
        self.ticks += 1


@pytest.mark.parametrize(("max_concurrency", "ahead"), [(1, 0), (8, 0), (8, 24)])
def test_a_refused_key_ends_a_batch_of_many(
    vantax_emulator: Emulator, monkeypatch: pytest.MonkeyPatch, max_concurrency: int, ahead: int
) -> None:
    conn = {"conn_type": "vantax", "host": vantax_emulator.url, "password": "vx_test_not_the_key"}
    monkeypatch.setenv("AIRFLOW_CONN_VANTAX_REFUSED", json.dumps(conn))
    hook = VantaxHook("vantax_refused")
    taken: list[int] = []

    def items() -> Iterator[BulkItem]:
        for i in range(1000):
            taken.append(i)
            yield BulkItem(
                i, hook.build_request(f"conv_{i}", channel="facebook", content="hi"), f"key-{i}", i
            )

    ledger = Ledger()

    async def run() -> None:
        try:
            await send_many(
                hook, items(), ledger, max_concurrency=max_concurrency, ahead=ahead, tick_interval=1.0,
                repeat_uncertain=True,
            )  # fmt: skip
        finally:
            await hook.aclose()

    with pytest.raises(VantaxAuthenticationError, match="HTTP 401"):
        asyncio.run(run())
    requests = vantax_emulator.requests()
    assert 1 <= len(requests) <= max_concurrency and all(r["status"] == 401 for r in requests)
    assert len(ledger.outcomes) == len(requests) and not any(o.ok or o.maybe_sent for o in ledger.outcomes)
    # Every item taken is accounted for: refused, or reported as never started.
    assert sorted([o.index for o in ledger.outcomes] + [item.index for item in ledger.unsent_items]) == taken
    assert len(taken) <= max_concurrency + ahead + 1
    # Each outcome carries its item's identity, so the ledger needs no table of its own.
    assert all(o.identity == o.index for o in ledger.outcomes)
    assert ledger.ticks >= 1  # the last tick runs after the error too
