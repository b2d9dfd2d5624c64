"""
Measurements that need a clean process: ``python -m bench._child memory N`` (peak memory of one
bulk send) and ``python -m bench._child tracker PAIRS_JSON`` (the many-message delivery trigger).
Both print one JSON line; the connection comes from ``AIRFLOW_CONN_VANTAX_DEFAULT``.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import sys
import time
import tracemalloc
from typing import Any

from bench._common import MESSAGE_FIELDS, context, peak_rss_mb, recipients


def memory(n: int, concurrency: int) -> dict[str, Any]:
    from vantax_provider.operators.vantax_bulk import VantaxBulkSendMessageOperator

    batch = recipients(n, prefix="conv_mem")
    operator = VantaxBulkSendMessageOperator(
        task_id="bulk", recipients=batch, max_concurrency=concurrency, **MESSAGE_FIELDS
    )
    ctx = context()
    gc.collect()
    rss_before = peak_rss_mb()
    tracemalloc.start()
    started = time.perf_counter()
    result = operator.execute(ctx)
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    result_bytes = len(json.dumps(result))
    checkpoint_bytes = max(len(v) for v in ctx["task_state_store"].data.values())
    return {
        "n": n, "sent": result["sent"], "elapsed": elapsed, "tracemalloc_peak_mb": peak / 2**20,
        "rss_before_mb": rss_before, "rss_peak_mb": peak_rss_mb(), "result_json_bytes": result_bytes,
        "largest_checkpoint_value_bytes": checkpoint_bytes,
    }  # fmt: skip


def tracker(pairs_file: str, poll_interval: float, concurrency: int) -> dict[str, Any]:
    from vantax_provider.triggers.vantax import VantaxMessagesStatusTrigger

    with open(pairs_file) as handle:
        pairs = json.load(handle)
    trigger = VantaxMessagesStatusTrigger(pairs, poll_interval=poll_interval, max_concurrency=concurrency)
    gc.collect()
    rss_before = peak_rss_mb()  # no tracemalloc here: it would inflate the CPU figure

    async def first_event() -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise RuntimeError("the trigger ended without an event")

    cpu, wall = time.process_time(), time.perf_counter()
    event = asyncio.run(first_event())
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {
        "messages": len(pairs), "status": event["status"], "counts": event["counts"], "wall": wall,
        "cpu": cpu, "rss_before_mb": rss_before, "rss_peak_mb": peak_rss_mb(),
    }  # fmt: skip


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    mode = sys.argv[1]
    if mode == "memory":
        out = memory(int(sys.argv[2]), int(sys.argv[3]))
    elif mode == "tracker":
        out = tracker(sys.argv[2], float(sys.argv[3]), int(sys.argv[4]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    print("BENCH " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
