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
    # The i-th start comes no sooner than i/50 s after the first (less timer slack).  Not a bound
    # on each gap: on a loaded machine the loop may wake two overdue sleepers back to back, which
    # only ever makes starts later, never earlier.
    assert all(t[i] >= i / 50 - 0.002 for i in range(len(t))), t
    assert t[-1] >= 0.19


def test_no_limit_starts_at_once() -> None:
    assert starts(AsyncPacer(), 20)[-1] < 0.05


def test_pause_holds_back_everyone() -> None:
    t = starts(AsyncPacer(rate_limit=100), 6, pause_after=0, pause=0.3)
    assert t[1] >= 0.29  # nobody started during the pause


def test_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        AsyncPacer(rate_limit=0)


# -- the account's limit shared by processes: AIMD (issue 10) ---------------------------------------

from vantax_provider.hooks import _pacing  # noqa: E402
from vantax_provider.hooks._pacing import AdaptiveRate  # noqa: E402


def test_adaptive_rate_starts_at_its_share_and_cuts_once_per_cooldown() -> None:
    rate = AdaptiveRate(100, share=0.25)
    assert rate.rate == 25
    rate.on_rate_limited(now=10.0)
    assert rate.rate == 25 * _pacing.DECREASE
    rate.on_rate_limited(now=10.0 + _pacing.COOLDOWN / 2)  # an answer to a request already in flight
    assert rate.rate == 25 * _pacing.DECREASE and rate.cuts == 1
    rate.on_rate_limited(now=10.0 + _pacing.COOLDOWN)
    assert rate.rate == 25 * _pacing.DECREASE**2 and rate.cuts == 2


def test_adaptive_rate_rises_slowly_then_faster_while_quiet_up_to_the_limit_never_below_its_floor() -> None:
    rate = AdaptiveRate(100, share=0.5)
    rate.on_success(now=0.0)
    rises = []
    for step in range(1, 7):  # good answers, one a second
        before = rate.rate
        rate.on_success(now=float(step))
        rises.append(rate.rate - before)
    # 2.5 % of the limit a second for 2 quiet seconds, then half as much again every second more.
    assert rises == pytest.approx([2.5, 2.5, 3.75, 5.0, 6.25, 7.5])
    rate.on_rate_limited(now=7.0)  # a 429 ends the quiet time: slow again
    before = rate.rate
    rate.on_success(now=8.0)
    assert rate.rate - before == pytest.approx(2.5)
    for step in range(9, 200):
        rate.on_success(now=float(step))
    assert rate.rate == 100  # never above the account's limit
    for step in range(200, 400):
        rate.on_rate_limited(now=float(step) * _pacing.COOLDOWN)
    assert rate.rate == pytest.approx(100 * _pacing.MIN_SHARE)


def test_no_rise_within_the_cooldown_after_a_cut() -> None:
    rate = AdaptiveRate(100)
    rate.on_success(now=0.0)
    rate.on_rate_limited(now=1.0)
    cut = rate.rate
    rate.on_success(now=1.0 + _pacing.COOLDOWN / 2)
    assert rate.rate == cut


def test_pacer_spaces_starts_by_the_slower_of_cap_and_share() -> None:
    pacer = AsyncPacer(rate_limit=1000)
    pacer.set_account_limit(50)
    assert pacer.interval == pytest.approx(1 / 50)
    pacer.set_account_limit(5000)  # the first call wins
    assert pacer.interval == pytest.approx(1 / 50)
    t = starts(pacer, 6)
    assert t[-1] >= 5 / 50 - 0.01


@pytest.mark.parametrize(("limit", "share"), [(0, 1.0), (-1, 1.0), (10, 0.0), (10, 1.5)])
def test_adaptive_rate_refuses_bad_settings(limit: float, share: float) -> None:
    with pytest.raises(ValueError):
        AdaptiveRate(limit, share)


def test_a_cut_applies_to_the_very_next_start() -> None:
    """No start is booked ahead at the old rate: 8 waiters, a cut after the 2nd start slows the 3rd."""
    pacer = AsyncPacer()
    pacer.set_account_limit(20)  # 50 ms apart
    times: list[float] = []

    async def one() -> None:
        await pacer.acquire()
        times.append(time.monotonic())
        if len(times) == 2:
            pacer.on_rate_limited()  # halved: 100 ms apart from now on

    async def run() -> None:
        await asyncio.gather(*(one() for _ in range(8)))

    asyncio.run(run())
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[0] >= 0.045, gaps
    # Every start after the cut is spaced at the new rate; booked slots would have kept 50 ms.
    assert all(g >= 0.095 for g in gaps[1:]), gaps
