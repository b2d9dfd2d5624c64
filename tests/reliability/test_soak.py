"""
Soak: messages through the bulk operator while 5% of the server's answers are injected faults
(2.5% 429 and 1.5% 503 before the message is created; 0.5% 503 and 0.5% 500 after it was), with
the rules' own seeded RNGs so each run repeats exactly.  Three modes:

- ``dedup``: 20,000 messages against an emulator that honours ``Idempotency-Key`` (our assumption
  about the service).  Asserted from the emulator's counts: every message created exactly once
  (20,000 created, 20,000 distinct conversations and keys, every after-create fault answered by a
  replay of the original), and the sending process's memory flat.
- ``no-dedup-resend`` and ``no-dedup-skip``: 2,000 messages each against an emulator that ignores
  the key, so only the provider stands between a fault and a second message.  Every fault after
  creation is ambiguous to the client.  With ``on_uncertain="resend"`` the hook repeats each of
  them, so the duplicates are exactly the after-create faults injected.  With ``"skip"`` a 500
  is not repeated and is reported ``maybe_sent`` (exactly one per 500 injected, plus any request
  whose connection failed unanswered, which may have created nothing), while a 503 is
  still repeated, because the provider assumes a 503 never created the message
  (docs/api-assumptions.md): the duplicates are exactly the 503s injected after creation.  In
  every mode, no recipient the result records as sent was posted again after the answer the
  result records.

Memory criterion (dedup run): the sender samples its traced Python heap (tracemalloc) every 0.1 s.
The operator streams each recipient's outcome to the report and keeps per recipient only the
duplicate check (its key's identity and position) and the journal's record of what was sent,
about a hundred bytes: the peak of the second half of the run may exceed the peak of the first
half by at most 256 bytes per message sent in the second half.  Keeping the outcome rows until
the end (measured: about 260 bytes per message more) fails this, and a leak of anything per
request (a response, a coroutine, a task, a pool entry) costs several KB per message; RSS is
reported alongside.  The state-store double keeps no history here: that would be the test's
memory, not the provider's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from tests.reliability._support import FAST_EXTRAS, figures
from vantax_provider.emulator.testing import running_emulator

REPO = Path(__file__).resolve().parents[2]

MODES = [
    pytest.param(True, "resend", 20_000, id="dedup"),
    pytest.param(False, "resend", 2_000, id="no-dedup-resend"),
    pytest.param(False, "skip", 2_000, id="no-dedup-skip"),
]


def posted_after_record(requests: list[dict[str, Any]], recorded: dict[str, str]) -> list[str]:
    """Recipients recorded as sent whose last POST was not their one successful POST.

    The emulator logs each request as it ends.  A recipient's requests run one after the other, so
    the answer the provider recorded is the recipient's only 2xx POST, and nothing may follow it.
    """
    posts: dict[str, list[int]] = defaultdict(list)
    for r in requests:
        if r["method"] == "POST" and r["conversation_id"] in recorded:
            posts[r["conversation_id"]].append(int(r["status"]))
    bad = []
    for cid in recorded:
        ok = [i for i, status in enumerate(posts[cid]) if 200 <= status < 300]
        if ok != [len(posts[cid]) - 1]:
            bad.append(cid)
    return sorted(bad)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # about 2 minutes on an idle machine; far longer on a busy one
@pytest.mark.parametrize(("dedup", "on_uncertain", "n"), MODES)
def test_soak_exactly_once_with_flat_memory(tmp_path: Path, dedup: bool, on_uncertain: str, n: int) -> None:
    with running_emulator(queued_seconds=0, sent_seconds=0, deduplicate=dedup) as emu:
        emu.inject("status", status=429, method="POST", probability=0.025, times=None, seed=11)
        emu.inject("status", status=503, method="POST", probability=0.015, times=None, seed=12)
        emu.inject("status", status=503, when="after", method="POST", probability=0.005, times=None, seed=13)
        emu.inject("status", status=500, when="after", method="POST", probability=0.005, times=None, seed=14)
        conn = json.loads(emu.connection_json())
        conn["extra"] = {**FAST_EXTRAS, "max_retries": 8, "timeout": 10}
        env = {**os.environ, "AIRFLOW_CONN_VANTAX_DEFAULT": json.dumps(conn), "PYTHONPATH": str(REPO)}
        proc = subprocess.run(
            [sys.executable, "-m", "tests.reliability._soak_worker", str(n), on_uncertain],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=1700,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        report = json.loads(proc.stdout.strip().splitlines()[-1])
        stats = emu.stats()
        messages = emu.messages()
        requests = emu.requests()
        faults = emu.faults()

    per_conversation = Counter(m["conversation_id"] for m in messages)
    keys = Counter(m["idempotency_key"] for m in messages)
    after_503 = next(f["hits"] for f in faults if f["when"] == "after" and f["status"] == 503)
    after_500 = next(f["hits"] for f in faults if f["when"] == "after" and f["status"] == 500)
    fault_hits = sum(f["hits"] for f in faults)
    duplicates = sum(c - 1 for c in per_conversation.values())
    everyone = {f"conv_soak_{i:06d}" for i in range(n)}
    recorded = report["sent_ids"]

    # A request whose connection failed unanswered (a reset, a close racing the POST) may or may
    # not have created its message.  Resend repeats it; skip reports it maybe_sent, as promised.
    unanswered = {cid for cid, err in report["maybe"].items() if err.startswith("VantaxTransportError")}
    # In every mode: everyone has a message (but for unanswered requests not repeated), the result
    # accounts for everyone, the faults were injected.
    missing = everyone - set(per_conversation)
    assert missing <= unanswered, [(cid, report["maybe"].get(cid, "not maybe_sent")) for cid in missing]
    assert report["failed"] == 0 and report["invalid"] == 0
    assert report["sent"] + report["maybe_sent"] == n and len(recorded) == report["sent"]
    assert 0.04 < fault_hits / stats["by_path_kind"]["create"] < 0.06
    assert after_503 > 0 and after_500 > 0, faults
    # What the provider records as sent is a message the server created, and nobody recorded as
    # sent was posted again once that message existed.
    ids = {m["id"] for m in messages}
    assert set(recorded.values()) <= ids
    assert posted_after_record(requests, recorded) == []
    assert None not in keys

    if dedup:
        assert stats["created"] == n and duplicates == 0 and len(keys) == n
        assert report["message_ids"] == n and report["maybe_sent"] == 0
        # Every message created before its answer failed came back as a replay, not a second message.
        assert stats["replayed"] == after_503 + after_500
    elif on_uncertain == "resend":
        # Each answer lost after creation was repeated under its key, which this service ignores.
        assert stats["replayed"] == 0 and report["maybe_sent"] == 0
        assert duplicates == after_503 + after_500 and stats["created"] == n + duplicates
    else:
        # A 500 after creation is not repeated: reported maybe_sent, one per 500 injected, with its
        # message in the log; a 503 is repeated by contract, so those are the only duplicates.
        assert stats["replayed"] == 0
        assert report["maybe_sent"] == after_500 + len(unanswered) == len(report["maybe"])
        assert all(per_conversation[cid] >= 1 for cid in set(report["maybe"]) - unanswered)
        assert duplicates == after_503 and stats["created"] == n - len(missing) + after_503

    mode = "soak" if dedup else f"soak/no-dedup-{on_uncertain}"
    f = figures(mode)
    f.cases += n
    f.faults_applied += fault_hits
    f.survived += fault_hits
    f.duplicates += duplicates
    f.extra.update({
        "created": stats["created"], "replayed": stats["replayed"], "after_create_503": after_503,
        "after_create_500": after_500, "maybe_sent": report["maybe_sent"], "unanswered": len(unanswered),
        "seconds": round(report["elapsed"], 1),
    })  # fmt: skip
    if not dedup:
        return

    samples = report["samples"]
    assert len(samples) >= 10, "the run was too short to sample"
    half = report["elapsed"] / 2
    first = max(m for t, _, m in samples if t <= half)
    second = max(m for t, _, m in samples if t > half)
    allowance = 256 * n / 2
    rss_first = max(r for t, r, _ in samples if t <= half)
    rss_second = max(r for t, r, _ in samples if t > half)
    f.leaks += int(second - first > allowance)
    f.extra.update({
        "heap_first_half_MB": round(first / 2**20, 1), "heap_second_half_MB": round(second / 2**20, 1),
        "heap_bytes_per_message": round((second - first) / (n / 2)),
        "rss_first_half_MB": round(rss_first / 2**20, 1), "rss_second_half_MB": round(rss_second / 2**20, 1),
    })  # fmt: skip
    assert second - first <= allowance, f"heap grew {second - first} bytes (allowed {allowance})"
