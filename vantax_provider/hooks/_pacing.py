"""
Shared pacing for concurrent async sends: an optional rate cap, the account's adaptive share
and a batch-wide pause.
"""

from __future__ import annotations

import asyncio
import time

from vantax_provider._arguments import finite_number

#: AIMD tuning, measured in docs/performance.md ("The account's rate limit across processes").
#: A 429 multiplies the rate by DECREASE, at most once per COOLDOWN seconds (the answers to
#: requests already in flight must not cut it again); while answers are good it rises by
#: INCREASE_SHARE of the account's limit per second; it never drops below MIN_SHARE of it.
DECREASE = 0.5
COOLDOWN = 1.0
INCREASE_SHARE = 0.025
MIN_SHARE = 0.01
#: After QUIET_AFTER seconds without a 429 the increase grows by one INCREASE_SHARE more every
#: QUIET_RAMP seconds: a sender left alone (the others finished or started late) finds the unused
#: budget within seconds, where a constant increase took 10 to 15 seconds at the end of a batch.
QUIET_AFTER = 2.0
QUIET_RAMP = 2.0
#: Longest gap between two good answers that still counts as time spent sending for the increase.
MAX_STEP = 1.0


class AdaptiveRate:
    """
    One process's share of an account-wide rate limit, found by AIMD (additive increase,
    multiplicative decrease), with no coordination between processes.

    Each sender starts at ``limit * share``; every 429 cuts its rate sharply and good answers
    raise it slowly, so senders that together exceed the account's limit each back off until
    their sum fits, and a sender left alone climbs back to the whole limit.

    :param limit: the account's limit, requests per second, for all its senders together.
    :param share: the fraction of ``limit`` this sender starts at (e.g. 1/4 for four parallel tasks).
    """

    def __init__(self, limit: float, share: float = 1.0) -> None:
        self.limit = finite_number(limit, "rate limit", positive=True)
        if not 0 < finite_number(share, "rate limit share") <= 1:
            raise ValueError(f"rate limit share must be in (0, 1], got {share!r}")
        self.rate = self.limit * share
        self.cuts = 0
        self._last_cut = -float("inf")
        self._last_good: float | None = None
        self._first_good: float | None = None

    @property
    def interval(self) -> float:
        return 1.0 / self.rate

    def on_success(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if self._first_good is None:
            self._first_good = now
        if now - self._last_cut >= COOLDOWN and self._last_good is not None:
            step = min(MAX_STEP, now - self._last_good)
            quiet = now - max(self._last_cut, self._first_good)
            boost = 1.0 + max(0.0, quiet - QUIET_AFTER) / QUIET_RAMP
            self.rate = min(self.limit, self.rate + INCREASE_SHARE * self.limit * step * boost)
        self._last_good = now

    def on_rate_limited(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if now - self._last_cut < COOLDOWN:
            return
        self._last_cut = now
        self.cuts += 1
        self.rate = max(self.limit * MIN_SHARE, self.rate * DECREASE)


class AsyncPacer:
    """
    Hands out start times to concurrent requests of one hook.

    A rate cap spaces starts ``1/rate`` seconds apart (a token bucket holding one token, so the
    rate holds over any window).  With the account's limit known (the connection's ``rate_limit``
    extra, set by :meth:`set_account_limit`), starts are spaced by the slower of the cap and this
    process's :class:`AdaptiveRate`, whose cut on a 429 slows the whole batch at once.  Without
    it, a pause set when the server answers 429 with ``Retry-After`` holds back every request of
    the hook until it ends, so a batch slows down as a whole instead of storming the server.

    :param rate_limit: most requests started per second by this hook; None for no cap.
    """

    def __init__(self, rate_limit: float | None = None) -> None:
        if rate_limit is not None:
            rate_limit = finite_number(rate_limit, "rate_limit", positive=True)
        self.cap_interval = 1.0 / rate_limit if rate_limit else 0.0
        self.adaptive: AdaptiveRate | None = None
        self._last_slot = -float("inf")
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        self._lock_obj = asyncio.Lock()
        self._paused_until = 0.0

    def set_account_limit(self, limit: float | None, share: float = 1.0) -> None:
        """Adapt to the account's limit from now on (first call wins; None keeps only the cap)."""
        if limit is not None and self.adaptive is None:
            self.adaptive = AdaptiveRate(limit, share)

    @property
    def interval(self) -> float:
        if self.adaptive is None:
            return self.cap_interval
        return max(self.cap_interval, self.adaptive.interval)

    def on_success(self) -> None:
        if self.adaptive is not None:
            self.adaptive.on_success()

    def on_rate_limited(self) -> None:
        if self.adaptive is not None:
            self.adaptive.on_rate_limited()

    def pause_for(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    @property
    def paused_for(self) -> float:
        return max(0.0, self._paused_until - time.monotonic())

    async def acquire(self) -> None:
        """Wait for this request's turn."""
        if not self.interval and time.monotonic() >= self._paused_until:
            return  # no pacing: no lock, no sleep
        # One waiter at a time, first come first served.  Nobody reserves a slot ahead: a slot is
        # taken when it comes, at the interval then in force, so an AIMD change applies to the
        # very next start instead of after a queue of starts booked at the old rate.
        async with self._lock():
            while True:
                now = time.monotonic()
                if now < self._paused_until:
                    await asyncio.sleep(self._paused_until - now)
                    continue
                slot = self._last_slot + self.interval
                if slot > now:
                    await asyncio.sleep(slot - now)
                    continue  # the interval, or a pause, may have changed meanwhile
                # Late by less than an interval (timer slack): keep the schedule, so the rate holds.
                # Later (idle): start afresh; idle time earns no burst.
                self._last_slot = slot if now - slot < self.interval else now
                return

    def _lock(self) -> asyncio.Lock:
        # An asyncio.Lock belongs to one event loop; a hook may serve several asyncio.run calls.
        loop = asyncio.get_running_loop()
        if self._lock_loop is not loop:
            self._lock_loop, self._lock_obj = loop, asyncio.Lock()
        return self._lock_obj
