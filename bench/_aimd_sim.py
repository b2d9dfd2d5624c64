"""
A simulation of the account's rate limit across processes, for tuning the AIMD constants cheaply:
K senders, each paced by the real ``AdaptiveRate``, against a token bucket of L per second
holding one second's worth, as the emulator enforces it.  A refused request waits for its
``Retry-After`` (whole seconds) and is sent again; the others go on at the cut rate.

``python -m bench._aimd_sim`` prints, for the current constants and for the previous version's
(a constant rise of 3 % of L per second), the worst and mean accepted rate over L and the worst
429 share, over seeded runs whose start times are spread over a few seconds.  Real runs are in
``bench._rate`` and the reliability suite; this only compares tunings.
"""

from __future__ import annotations

import heapq
import math
import random
import statistics
from typing import Any

from vantax_provider.hooks import _pacing

_START, _ARRIVE, _ACCEPTED = 0, 1, 2  # event kinds; a refused answer is _REFUSED + Retry-After
_REFUSED = 3


def simulate(
    starts: tuple[float, ...], *, limit: float = 20.0, per_sender: int = 300, share: float = 0.25,
    latency: float = 0.01, jitter: float = 3.0, seed: int = 0,
) -> tuple[float, float]:  # fmt: skip
    """One run: (accepted creates over their span / limit, 429 answers / requests)."""
    rng = random.Random(seed)
    rates = [_pacing.AdaptiveRate(limit, share) for _ in starts]
    tokens, refilled = limit, 0.0
    fresh = [per_sender] * len(starts)
    retries: list[list[float]] = [[] for _ in starts]
    last_slot = [-math.inf] * len(starts)
    events: list[tuple[float, int, int]] = [(t, _START, i) for i, t in enumerate(starts)]
    heapq.heapify(events)
    accepted: list[float] = []
    refused = requests = 0
    while events:
        now, kind, i = heapq.heappop(events)
        if kind == _START:
            if not (fresh[i] or (retries[i] and retries[i][0] <= now)):
                if retries[i]:
                    heapq.heappush(events, (retries[i][0], _START, i))
                continue
            interval = 1 / rates[i].rate
            slot = last_slot[i] + interval
            if slot > now + 1e-12:
                heapq.heappush(events, (slot, _START, i))
                continue
            last_slot[i] = slot if now - slot < interval else now  # as AsyncPacer.acquire
            if fresh[i]:
                fresh[i] -= 1
            else:
                heapq.heappop(retries[i])
            heapq.heappush(events, (now + latency * (1 + jitter * rng.random()) / 2, _ARRIVE, i))
            heapq.heappush(events, (now + interval, _START, i))
        elif kind == _ARRIVE:
            requests += 1
            tokens, refilled = min(limit, tokens + (now - refilled) * limit), now
            if tokens >= 1:
                tokens -= 1
                accepted.append(now)
                heapq.heappush(events, (now + latency / 2, _ACCEPTED, i))
            else:
                refused += 1
                retry_after = max(1, math.ceil((1 - tokens) / limit))
                heapq.heappush(events, (now + latency / 2, _REFUSED + retry_after, i))
        elif kind == _ACCEPTED:
            rates[i].on_success(now)
        else:
            rates[i].on_rate_limited(now)
            heapq.heappush(retries[i], now + kind - _REFUSED)
            heapq.heappush(events, (now + kind - _REFUSED, _START, i))
    accepted.sort()
    return (len(accepted) - 1) / (accepted[-1] - accepted[0]) / limit, refused / requests


def spread(runs: int = 48, senders: int = 4, within: float = 3.0, **kwargs: Any) -> dict[str, float]:
    """Seeded runs with start times spread over ``within`` seconds: worst and mean figures."""
    results = []
    for k in range(runs):
        rng = random.Random(1000 + k)
        starts = tuple(sorted(rng.uniform(0, within) for _ in range(senders)))
        results.append(simulate(starts, seed=k, **kwargs))
    ratios = [r[0] for r in results]
    return {
        "worst": min(ratios), "mean": statistics.mean(ratios), "worst_429": max(r[1] for r in results),
    }  # fmt: skip


def main() -> None:
    current = (_pacing.INCREASE_SHARE, _pacing.QUIET_AFTER)
    tunings = {"current": current, "constant rise of 3 % (previous)": (0.03, math.inf)}
    for share in (0.25, 1.0):
        for name, (increase, quiet_after) in tunings.items():
            _pacing.INCREASE_SHARE, _pacing.QUIET_AFTER = increase, quiet_after
            f = spread(share=share)
            print(
                f"share {share:4.2f}, {name:<32} accepted/L worst {f['worst']:.3f} mean {f['mean']:.3f}, "
                f"429 worst {f['worst_429']:.3f}"
            )
    _pacing.INCREASE_SHARE, _pacing.QUIET_AFTER = current


if __name__ == "__main__":
    main()
