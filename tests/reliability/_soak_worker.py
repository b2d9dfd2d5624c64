"""
The sending process of the soak: runs the bulk operator once over N recipients against the
emulator named in AIRFLOW_CONN_VANTAX_DEFAULT, sampling its own RSS, and prints one JSON line.

Run as ``python -m tests.reliability._soak_worker N [ON_UNCERTAIN]`` (the test does this in a
subprocess, so the memory measured belongs to the sender alone).  The JSON line carries the counts,
the message id the result records for each recipient reported ``sent``, and the recipients
reported ``maybe_sent`` with their errors, so the test can compare the provider's record with the
emulator's log.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time
import tracemalloc


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main(total: int, on_uncertain: str = "resend") -> None:
    from tests.reliability._support import MemoryStateStore, make_context
    from vantax_provider.operators.vantax_bulk import VantaxBulkSendMessageOperator

    recipients = [{"cid": f"conv_soak_{i:06d}", "name": f"Customer {i}"} for i in range(total)]
    op = VantaxBulkSendMessageOperator(
        task_id="soak", recipients=recipients, conversation_id="{{ recipient.cid }}", channel="facebook",
        content="Hello {{ recipient.name }}, your order has shipped.", max_concurrency=32,
        checkpoint_interval=1.0, progress_interval=5.0, on_uncertain=on_uncertain,
    )  # fmt: skip
    samples: list[tuple[float, int, int]] = []
    stop = threading.Event()
    tracemalloc.start(1)

    def sample() -> None:
        while not stop.is_set():
            traced, _ = tracemalloc.get_traced_memory()
            samples.append((time.monotonic(), rss_bytes(), traced))
            stop.wait(0.1)

    gc.collect()
    sampler = threading.Thread(target=sample, daemon=True)
    started = time.monotonic()
    sampler.start()
    # No history in the store double: it would be the test's memory, not the provider's.
    result = op.execute(make_context("soak", store=MemoryStateStore(keep_history=False)))
    stop.set()
    sampler.join()
    elapsed = time.monotonic() - started
    outcome_bytes = len(json.dumps(result))  # the XCom result: bounded, every outcome is in the report
    from vantax_provider.operators.vantax_bulk import read_report

    rows = list(read_report(result["report"]))
    print(json.dumps({
        "elapsed": elapsed, "samples": [(t - started, r, m) for t, r, m in samples],
        "sent": result["sent"], "failed": result["failed"], "invalid": result["invalid"],
        "maybe_sent": result["maybe_sent"],
        "message_ids": len({o["message_id"] for o in rows if o.get("message_id")}),
        "sent_ids": {o["conversation_id"]: o["message_id"] for o in rows if o["outcome"] == "sent"},
        "maybe": {o["conversation_id"]: o.get("error") for o in rows if o["outcome"] == "maybe_sent"},
        "outcome_json_bytes": outcome_bytes,
    }))  # fmt: skip


if __name__ == "__main__":
    main(int(sys.argv[1]), *sys.argv[2:3])
