"""
Soak: 20,000 messages through the bulk operator while 5% of the server's answers are injected
faults (2.5% 429 and 1.5% 503 before the message is created, 1% 503 after it was), with the
rules' own seeded RNGs so the run repeats exactly.

Asserted, from the emulator's counts: every message created exactly once (20,000 created, 20,000
distinct conversations and idempotency keys, every after-create fault answered by a replay of
the original), and the sending process's memory flat.

Memory criterion: the sender samples its traced Python heap (tracemalloc) every 0.1 s. The
result the operator returns keeps one small outcome per recipient by design (ids and status, a
few hundred bytes), so the heap may grow by that much and no more: the peak of the second half
of the run may exceed the peak of the first half by at most 1 KB per message sent in the second
half.  A leak of anything per request (a response, a coroutine, a task, a pool entry) costs
several KB per message and fails this by a wide margin; RSS is reported alongside.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.reliability._support import FAST_EXTRAS, figures
from vantax_provider.emulator.testing import running_emulator

REPO = Path(__file__).resolve().parents[2]
N = 20_000


@pytest.mark.slow
def test_twenty_thousand_messages_exactly_once_with_flat_memory(tmp_path: Path) -> None:
    with running_emulator(queued_seconds=0, sent_seconds=0) as emu:
        emu.inject("status", status=429, method="POST", probability=0.025, times=None, seed=11)
        emu.inject("status", status=503, method="POST", probability=0.015, times=None, seed=12)
        emu.inject("status", status=503, when="after", method="POST", probability=0.01, times=None, seed=13)
        conn = json.loads(emu.connection_json())
        conn["extra"] = {**FAST_EXTRAS, "max_retries": 8, "timeout": 10}
        env = {**os.environ, "AIRFLOW_CONN_VANTAX_DEFAULT": json.dumps(conn), "PYTHONPATH": str(REPO)}
        proc = subprocess.run(
            [sys.executable, "-m", "tests.reliability._soak_worker", str(N)],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        report = json.loads(proc.stdout.strip().splitlines()[-1])
        stats = emu.stats()
        messages = emu.messages()
        faults = emu.faults()

    per_conversation = Counter(m["conversation_id"] for m in messages)
    keys = Counter(m["idempotency_key"] for m in messages)
    after_hits = next(f["hits"] for f in faults if f["when"] == "after")
    fault_hits = sum(f["hits"] for f in faults)
    assert report["sent"] == N and report["failed"] == 0 and report["invalid"] == 0
    assert stats["created"] == N and len(per_conversation) == N and max(per_conversation.values()) == 1
    assert len(keys) == N and None not in keys
    assert report["message_ids"] == N
    # Every message created before its answer failed came back as a replay, not a second message.
    assert stats["replayed"] == after_hits
    assert 0.04 < fault_hits / stats["by_path_kind"]["create"] < 0.06

    samples = report["samples"]
    assert len(samples) >= 10, "the run was too short to sample"
    half = report["elapsed"] / 2
    first = max(m for t, _, m in samples if t <= half)
    second = max(m for t, _, m in samples if t > half)
    allowance = 1024 * N / 2
    rss_first = max(r for t, r, _ in samples if t <= half)
    rss_second = max(r for t, r, _ in samples if t > half)
    f = figures("soak")
    f.cases += N
    f.faults_applied += fault_hits
    f.survived += fault_hits
    f.duplicates += sum(n - 1 for n in per_conversation.values())
    f.leaks += int(second - first > allowance)
    f.extra.update({
        "created": stats["created"], "replayed": stats["replayed"], "seconds": round(report["elapsed"], 1),
        "heap_first_half_MB": round(first / 2**20, 1), "heap_second_half_MB": round(second / 2**20, 1),
        "heap_bytes_per_message": round((second - first) / (N / 2)),
        "rss_first_half_MB": round(rss_first / 2**20, 1), "rss_second_half_MB": round(rss_second / 2**20, 1),
    })  # fmt: skip
    assert second - first <= allowance, f"heap grew {second - first} bytes (allowed {allowance})"
