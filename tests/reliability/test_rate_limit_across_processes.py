"""
The account's rate limit across processes (issue 10): four bulk sends, each in its own process,
on one connection whose ``rate_limit`` extra is L, against an emulator that enforces L requests/s
(a token bucket answering 429 with ``Retry-After``) and does not deduplicate, so a resend would be
a second message.  Each process only knows L and its starting share; AIMD pacing finds the rest.

Asserted as ratios of the emulator's own log: accepted creates per second >= 0.9 L over the
span from the first to the last accepted create, 429 answers <= 5 % of requests, no recipient
with two messages.  L is low (20/s) so that the senders, not the loaded 2-core box, are what is
measured; ``make bench`` draws the curve at higher L.  Each process sends 300 messages, about a
minute in all: the end of a batch, when the last tasks climb back alone, takes 10 to 15 seconds
whatever the batch size (docs/scale.md), and a shorter run would mostly measure that end.
"""

from __future__ import annotations

import pytest

from bench._rate import measure
from tests.reliability._support import figures
from vantax_provider.emulator.testing import running_emulator

LIMIT = 20.0
PROCESSES = 4
PER_PROCESS = 300


@pytest.mark.slow
def test_four_processes_share_the_account_limit() -> None:
    with running_emulator(queued_seconds=0, sent_seconds=0) as emu:
        result = measure(emu, LIMIT, processes=PROCESSES, per_process=PER_PROCESS, share=1 / PROCESSES)
    f = figures("account_rate_limit")
    f.cases += result["recipients"]
    f.faults_applied += result["throttled"]
    f.survived += result["sent"]
    f.duplicates += result["duplicates"]
    f.extra.update({
        "limit": LIMIT, "processes": PROCESSES, "accepted_ratio": round(result["accepted_ratio"], 3),
        "throttled_ratio": round(result["throttled_ratio"], 3), "requests": result["requests"],
    })  # fmt: skip
    assert result["sent"] == result["recipients"] == result["created"] and result["failed"] == 0, result
    assert result["duplicates"] == 0, result
    assert result["accepted_ratio"] >= 0.9, result
    assert result["throttled_ratio"] <= 0.05, result
