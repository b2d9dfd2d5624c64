"""Shared pacing for concurrent async sends: an optional rate limit and a batch-wide pause."""

from __future__ import annotations

import asyncio
import time


class AsyncPacer:
    """
    Hands out start times to concurrent requests of one hook.

    A rate limit spaces starts ``1/rate`` seconds apart (a token bucket holding one token, so
    the rate holds over any window). A pause, set when the server answers 429 with
    ``Retry-After``, holds back every request of the hook until it ends, so a batch slows
    down as a whole instead of storming the server with retries.

    :param rate_limit: most requests started per second; None for no limit.
    """

    def __init__(self, rate_limit: float | None = None) -> None:
        if rate_limit is not None and rate_limit <= 0:
            raise ValueError(f"rate_limit must be positive, got {rate_limit!r}")
        self.interval = 1.0 / rate_limit if rate_limit else 0.0
        self._next_slot = 0.0
        self._paused_until = 0.0

    def pause_for(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    @property
    def paused_for(self) -> float:
        return max(0.0, self._paused_until - time.monotonic())

    async def acquire(self) -> None:
        """Wait for this request's turn."""
        while True:
            now = time.monotonic()
            if now < self._paused_until:
                await asyncio.sleep(self._paused_until - now)
                continue
            # Reserve the slot before sleeping, so concurrent callers queue up behind it.
            slot = max(now, self._next_slot)
            self._next_slot = slot + self.interval
            if slot > now:
                await asyncio.sleep(slot - now)
                if time.monotonic() < self._paused_until:
                    continue  # a pause began while this request waited for its slot
            return
