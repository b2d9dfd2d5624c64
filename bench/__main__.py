"""
``python -m bench``: one run, one emulator (50 ms added latency), every figure of issue 4.

1. Throughput: the bulk operator (``execute`` with a minimal context and an in-memory state
   store) at concurrency 32 and 64, a bare ``httpx.AsyncClient`` loop at the same concurrency
   (the ceiling), and a sequential sync ``httpx.Client`` loop (the naive way).
2. Peak memory of one 10,000-recipient bulk send, in a fresh process.
4. The account's rate limit across processes (issue 10): 4 bulk sends in separate processes on one
   connection with ``rate_limit`` = L, against an emulator enforcing L; the curve over L.
3. The delivery tracker: 1,000 pending messages followed by ``VantaxMessagesStatusTrigger`` in
   one fresh process: time to resolve, CPU per status read, peak memory.
5. Throughput through a real DAG run (issue 10, section 4): the bulk operator run by ``dag.test()``
   in its own Airflow home against a bare ``httpx.AsyncClient`` loop, 2,000 recipients at
   concurrency 32 and 64, throughput as the emulator's span from the first to the last create.
   ``python -m bench --dagrun`` runs only this part.
6. Rendering a literal ``recipients`` list: the bulk operator against Airflow's own rendering
   (``python -m bench render-cost``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from bench._common import MESSAGE_FIELDS, context, recipients

LATENCY_MS = 50
BULK_N = 1500
ROUNDS = 2
SEQUENTIAL_N = 200
MEMORY_N = 10_000
TRACKER_N = 1000
TARGET_VS_BARE = 0.9
TARGET_VS_SEQUENTIAL = 15.0
RATE_LIMITS = (20.0, 50.0, 100.0)
RATE_PER_PROCESS_SECONDS = 15  # per process, in seconds of the whole limit: 4 make about a minute
DAGRUN_N = 2000
DAGRUN_ROUNDS = 2
DAGRUN_CONCURRENCY = (32, 64)
TARGET_DAGRUN_VS_BARE = 0.95


def _bulk(n: int, concurrency: int, prefix: str) -> float:
    from vantax_provider.operators.vantax_bulk import VantaxBulkSendMessageOperator

    operator = VantaxBulkSendMessageOperator(
        task_id="bulk", recipients=recipients(n, prefix), max_concurrency=concurrency, **MESSAGE_FIELDS
    )
    started = time.perf_counter()
    result = operator.execute(context())
    elapsed = time.perf_counter() - started
    assert result["sent"] == n, result["failed"]
    return n / elapsed


def _bare(url: str, api_key: str, n: int, concurrency: int, prefix: str) -> float:
    import httpx

    async def run() -> None:
        headers = {"Authorization": f"Bearer {api_key}"}
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30) as client:
            indexes = iter(range(n))

            async def worker() -> None:
                for i in indexes:
                    body = {"channel": "email", "subject": "Your pro plan",
                            "content": f"Hi Customer {i}, your pro plan renews on 2025-01-01."}  # fmt: skip
                    response = await client.post(
                        f"/v1/conversations/{prefix}_{i:06d}/messages", json=body,
                        headers={"Idempotency-Key": f"bare-{prefix}-{i}"},
                    )  # fmt: skip
                    assert response.status_code == 201, response.text

            await asyncio.gather(*(worker() for _ in range(concurrency)))

    started = time.perf_counter()
    asyncio.run(run())
    return n / (time.perf_counter() - started)


def _sequential(url: str, api_key: str, n: int) -> float:
    import httpx

    started = time.perf_counter()
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {api_key}"}, timeout=30) as client:
        for i in range(n):
            body = {"channel": "email", "subject": "Your pro plan",
                    "content": f"Hi Customer {i}, your pro plan renews on 2025-01-01."}  # fmt: skip
            response = client.post(f"/v1/conversations/conv_seq_{i:06d}/messages", json=body)
            assert response.status_code == 201, response.text
    return n / (time.perf_counter() - started)


def _child(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "bench._child", *args], capture_output=True, text=True, env=os.environ.copy(),
        timeout=300,
    )  # fmt: skip
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"bench child {args} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return dict(json.loads(line.removeprefix("BENCH ")))


def _verdict(value: float, target: float) -> str:
    return "PASS" if value >= target else "FAIL"


def _machine() -> str:
    import airflow

    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, Airflow {airflow.__version__}"
    )


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("airflow").setLevel(logging.WARNING)
    logging.getLogger("airflow.task").setLevel(logging.WARNING)  # the progress lines
    from vantax_provider.emulator.testing import running_emulator

    started = time.perf_counter()
    print(f"machine: {_machine()}")
    print(f"load average before: {os.getloadavg()[0]:.2f} (client and emulator share these CPUs)")
    print(f"emulator: separate process, {LATENCY_MS} ms added latency per request")
    with running_emulator(latency_ms=LATENCY_MS) as emu:
        os.environ.update(emu.airflow_env())
        url, key = emu.url, emu.api_key
        _bare(url, key, 300, 32, "conv_warm")  # warm-up: imports, connections
        _bulk(300, 32, "conv_warm2")
        emu.reset()

        runs: dict[str, list[float]] = {}
        steps: list[tuple[str, Callable[[str], float]]] = [
            ("bare_32", lambda p: _bare(url, key, BULK_N, 32, p)),
            ("bulk_32", lambda p: _bulk(BULK_N, 32, p)),
            ("bare_64", lambda p: _bare(url, key, BULK_N, 64, p)),
            ("bulk_64", lambda p: _bulk(BULK_N, 64, p)),
        ]
        # Interleaved, forwards then backwards, best of the rounds: other load on a shared machine
        # hits both senders alike instead of whichever happened to run during it.
        for round_ in range(ROUNDS):
            for name, step in steps if round_ % 2 == 0 else steps[::-1]:
                runs.setdefault(name, []).append(step(f"conv_{name}_{round_}"))
                emu.reset()
        runs["sequential"] = [_sequential(url, key, SEQUENTIAL_N)]
        emu.reset()
        rates = {name: max(values) for name, values in runs.items()}
        print(f"\nthroughput, messages/s ({BULK_N} messages per concurrent run, best of {ROUNDS} interleaved "
              f"rounds; {SEQUENTIAL_N} sequential):")  # fmt: skip
        for name, values in runs.items():
            print(f"  {name:<11} {rates[name]:8.1f}   (runs: {', '.join(f'{v:.0f}' for v in values)})")
        print("ratios:")
        for c in (32, 64):
            vs_bare = rates[f"bulk_{c}"] / rates[f"bare_{c}"]
            vs_seq = rates[f"bulk_{c}"] / rates["sequential"]
            print(f"  bulk/bare       at {c}: {vs_bare:5.2f}  (target >= {TARGET_VS_BARE})  "
                  f"{_verdict(vs_bare, TARGET_VS_BARE)}")  # fmt: skip
            print(f"  bulk/sequential at {c}: {vs_seq:5.1f}  (target >= {TARGET_VS_SEQUENTIAL:g})   "
                  f"{_verdict(vs_seq, TARGET_VS_SEQUENTIAL)}")  # fmt: skip

        mem = _child("memory", str(MEMORY_N), "64")
        emu.reset()
        print(f"\nmemory, one bulk send of {MEMORY_N} recipients (fresh process, concurrency 64):")
        print(f"  tracemalloc peak during execute: {mem['tracemalloc_peak_mb']:.1f} MB")
        print(f"  RSS: {mem['rss_before_mb']:.0f} MB before, {mem['rss_peak_mb']:.0f} MB peak "
              f"(+{mem['rss_peak_mb'] - mem['rss_before_mb']:.0f} MB)")  # fmt: skip
        print(f"  result XCom {mem['result_json_bytes'] / 1e6:.2f} MB JSON; largest state-store value "
              f"{mem['largest_checkpoint_value_bytes']} bytes (policy 65535)")  # fmt: skip

        emu.configure(queued_seconds=2.0, sent_seconds=8.0)  # delivered ~10 s after creation
        _bare(url, key, TRACKER_N, 32, "conv_track")
        pairs = [[m["conversation_id"], m["id"]] for m in emu.messages()]
        gets_before = emu.stats()["by_path_kind"]["get"]
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
            json.dump(pairs, handle)
        try:
            track = _child("tracker", handle.name, "1.0", "32")
        finally:
            os.unlink(handle.name)
        reads = emu.stats()["by_path_kind"]["get"] - gets_before
        rounds = reads / len(pairs)
        print(f"\ndelivery tracker: {len(pairs)} pending messages, VantaxMessagesStatusTrigger in one "
              "process (poll_interval 1 s, 32 reads in flight; delivered ~10 s after creation):")  # fmt: skip
        print(f"  resolved: {track['status']} {track['counts']} in {track['wall']:.1f} s")
        per_read = 1000 * track["cpu"] / max(reads, 1)
        print(f"  status reads: {reads} (~{rounds:.1f} polling rounds); CPU {track['cpu']:.2f} s total, "
              f"{per_read:.2f} ms per read, {per_read * len(pairs):.0f} ms per round")  # fmt: skip
        print(f"  peak RSS {track['rss_before_mb']:.0f} MB before -> {track['rss_peak_mb']:.0f} MB "
              f"(+{track['rss_peak_mb'] - track['rss_before_mb']:.0f} MB)")  # fmt: skip
    _import_cost()
    _render_cost()
    _emulator_rate()
    _rate_curve()
    _dagrun()
    print(f"\nbench took {time.perf_counter() - started:.0f} s")


def _dagrun() -> None:
    import statistics

    from bench._dagrun import measure

    print(f"\nthroughput through a DAG run: {DAGRUN_N} recipients, emulator +{LATENCY_MS} ms per answer, "
          "the bulk operator by dag.test() in its own process and Airflow home (SQLite, the "
          "real task_state_store), a bare httpx.AsyncClient loop (default pool, 100 connections) in a fresh "
          "process; messages/s: creates over the emulator's span, first to last")  # fmt: skip
    print(f"  load average before: {os.getloadavg()[0]:.2f}")
    runs = measure(LATENCY_MS, DAGRUN_N, DAGRUN_CONCURRENCY, DAGRUN_ROUNDS)
    rate = {name: statistics.median(r["rate"] for r in values) for name, values in runs.items()}
    for name, values in runs.items():
        bound = 1000 * int(name.rsplit("_", 1)[1]) / LATENCY_MS
        figures = ", ".join(f"{r['rate']:.0f}" for r in values)
        busy = statistics.median(r["server_in_flight"] for r in values)
        journal = ""
        if values[0].get("journal_writes"):
            writes = sum(r["journal_writes"] for r in values)
            journal = f"; journal {writes / len(values):.0f} writes, " \
                f"{1000 * sum(r['journal_write_seconds'] for r in values) / writes:.1f} ms each"  # fmt: skip
        print(f"  {name:<12} {rate[name]:7.1f} /s  {rate[name] / bound:4.2f} of C/L  "
              f"(runs: {figures}; {busy:.1f} open at the server{journal})")  # fmt: skip
    print(f"  load average after: {os.getloadavg()[0]:.2f}")
    for c in DAGRUN_CONCURRENCY:
        for kind, setting in (("bulk", "max_uncertain = C, the default"), ("ahead", "max_uncertain = 2 C")):
            ratio = rate[f"{kind}_{c}"] / rate[f"bare_{c}"]
            print(f"  bulk/bare at {c}, {setting}: {ratio:5.2f}  (target >= {TARGET_DAGRUN_VS_BARE})  "
                  f"{_verdict(ratio, TARGET_DAGRUN_VS_BARE)}")  # fmt: skip
        if f"nojournal_{c}" in rate:
            print(f"    diagnosis, the same DAG run without the journal / bare: "
                  f"{rate[f'nojournal_{c}'] / rate[f'bare_{c}']:5.2f}")  # fmt: skip


def _rate_curve() -> None:
    from bench._rate import measure
    from vantax_provider.emulator.testing import running_emulator

    print("\naccount rate limit, 4 bulk sends in separate processes, one connection (rate_limit = L), "
          "emulator enforcing L (token bucket, burst L):")  # fmt: skip
    print(f"  {'L/s':>5} {'share':>6} {'accepted/L':>10} {'429 share':>9} {'duplicates':>10} {'requests':>8}")
    with running_emulator(queued_seconds=0, sent_seconds=0) as emu:
        for limit in RATE_LIMITS:
            for share in (0.25, None):
                per_process = int(limit * RATE_PER_PROCESS_SECONDS)
                r = measure(emu, limit, processes=4, per_process=per_process, share=share)
                verdict = _verdict(r["accepted_ratio"], 0.9) if r["throttled_ratio"] <= 0.05 else "FAIL"
                figures = (
                    f"  {limit:5.0f} {share or 1.0:6.2f} {r['accepted_ratio']:10.3f} "
                    f"{r['throttled_ratio']:9.3f} {r['duplicates']:10d} {r['requests']:8d}"
                )
                print(f"{figures}  {verdict}")


def _import_cost() -> None:
    from bench._import_cost import report

    print()
    report()


def _render_cost() -> None:
    from bench._render_cost import report

    print()
    report()


def _emulator_rate() -> None:
    from bench._emulator_rate import report

    print()
    report()


def _scenario(argv: list[str]) -> None:
    """``python -m bench`` runs every figure above; ``python -m bench <scenario>`` one of them, or
    ``celery [recipients] [chunks]``, the large outreach on the Celery deployment (bench/_celery.py)."""
    alone: dict[str, Callable[[], None]] = {
        "dagrun": _dagrun,
        "rate": _rate_curve,
        "import-cost": _import_cost,
        "render-cost": _render_cost,
        "emulator": _emulator_rate,
    }
    if argv and argv[0] == "celery":
        from bench._celery import DEFAULT_CHUNKS, DEFAULT_RECIPIENTS
        from bench._celery import run as celery

        numbers = [int(a.replace("_", "").replace(",", "")) for a in argv[1:3]]
        celery(*(numbers + [DEFAULT_RECIPIENTS, DEFAULT_CHUNKS][len(numbers) :]))
    elif argv and argv[0].removeprefix("--") in alone:
        logging.basicConfig(level=logging.WARNING)
        alone[argv[0].removeprefix("--")]()
    elif argv:
        known = ", ".join(["celery", *alone])
        raise SystemExit(f"unknown bench scenario {argv[0]!r}; known: {known} (or none for every figure)")
    else:
        main()


if __name__ == "__main__":
    _scenario(sys.argv[1:])
