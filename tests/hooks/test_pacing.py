from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from vantax_provider.hooks._pacing import AsyncPacer


def starts(pacer: AsyncPacer, n: int, pause_after: int | None = None, pause: float = 0.0) -> list[float]:
    """Start times of ``n`` concurrent acquirers, relative to the first."""
    times: list[float] = []

    async def one(i: int) -> None:
        await pacer.acquire()
        times.append(time.monotonic())
        if pause_after is not None and i == pause_after:
            pacer.pause_for(pause)

    async def run() -> None:
        await asyncio.gather(*(one(i) for i in range(n)))

    asyncio.run(run())
    times.sort()
    return [t - times[0] for t in times]


def test_rate_limit_spaces_starts() -> None:
    t = starts(AsyncPacer(rate_limit=50), 11)
    gaps = [b - a for a, b in itertools.pairwise(t)]
    assert min(gaps) >= 0.018  # 1/50 s, less timer slack
    assert t[-1] >= 0.19


def test_no_limit_starts_at_once() -> None:
    assert starts(AsyncPacer(), 20)[-1] < 0.05


def test_pause_holds_back_everyone() -> None:
    t = starts(AsyncPacer(rate_limit=100), 6, pause_after=0, pause=0.3)
    assert t[1] >= 0.29  # nobody started during the pause


def test_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        AsyncPacer(rate_limit=0)
