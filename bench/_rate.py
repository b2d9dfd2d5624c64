"""
The account's rate limit across processes: several bulk sends, each in its own process, on one
connection whose ``rate_limit`` extra is L, against an emulator that enforces L requests/s.

``measure()`` is shared by ``make bench`` (the curve over L) and the reliability test (the ratios).
``python -m bench._rate worker ...`` is one sending process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import MESSAGE_FIELDS, context, recipients

REPO = Path(__file__).resolve().parents[1]


def measure(
    emu: Any, limit: float, *, processes: int = 4, per_process: int = 500, share: float | None = None,
    concurrency: int = 32, timeout: float = 600,
) -> dict[str, Any]:  # fmt: skip
    """
    Run ``processes`` bulk sends of ``per_process`` recipients at once; the emulator's figures.

    The emulator is reset and set to enforce ``limit`` (no deduplication, so any resend would be
    counted as a second message).  ``share`` is the connection's ``rate_limit_share`` (None: unset).
    """
    emu.reset()
    emu.configure(rate_limit=limit, deduplicate=False)
    conn = json.loads(emu.connection_json())
    conn["extra"] = {"rate_limit": limit, "max_retries": 10, "max_retry_time": 600}
    if share is not None:
        conn["extra"]["rate_limit_share"] = share
    env = {**os.environ, "AIRFLOW_CONN_VANTAX_DEFAULT": json.dumps(conn)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    gate = Path(tempfile.mkdtemp(prefix="vantax-rate-"))
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench._rate",
                "worker",
                f"conv_rate_{i}",
                str(per_process),
                str(concurrency),
                str(gate),
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(processes)
    ]
    # Start together: each process imports Airflow and builds its operator, then waits for "go".
    deadline = time.monotonic() + timeout
    while len(list(gate.glob("ready_*"))) < processes and time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            break
        time.sleep(0.1)
    (gate / "go").touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=timeout)
        line = next((x for x in out.splitlines() if x.startswith("RATE ")), None)
        if proc.returncode != 0 or line is None:
            raise RuntimeError(f"rate worker failed ({proc.returncode}):\n{out[-2000:]}\n{err[-3000:]}")
        results.append(json.loads(line.removeprefix("RATE ")))
    shutil.rmtree(gate, ignore_errors=True)
    return {
        "limit": limit,
        "processes": processes,
        "share": share,
        "recipients": processes * per_process,
        "sent": sum(r["sent"] for r in results),
        "failed": sum(r["failed"] for r in results),
        **account_figures(emu.requests(), emu.messages(), limit),
        "late": max(r["late"] for r in results),
        "elapsed": [round(r["elapsed"], 1) for r in results],
    }


def account_figures(
    log: list[dict[str, Any]], messages: list[dict[str, Any]], limit: float
) -> dict[str, Any]:
    """The emulator's view of a rate-limited run: accepted creates over their span, 429s, duplicates."""
    times = sorted(r["t"] for r in log if r["kind"] == "create" and r["status"] == 201)
    span = times[-1] - times[0] if len(times) > 1 else float("nan")
    throttled = sum(1 for r in log if r["status"] == 429)
    conversations = {m["conversation_id"] for m in messages}
    return {
        "created": len(messages),
        "duplicates": len(messages) - len(conversations),
        "requests": len(log),
        "throttled": throttled,
        "throttled_ratio": throttled / max(1, len(log)),
        "accepted_rate": (len(times) - 1) / span if span > 0 else float("nan"),
        "accepted_ratio": ((len(times) - 1) / span) / limit if span > 0 else float("nan"),
        "span": span,
    }


def worker(prefix: str, n: int, concurrency: int, gate: Path) -> dict[str, Any]:
    import logging

    from vantax_provider.operators.vantax_bulk import VantaxBulkSendMessageOperator

    logging.basicConfig(level=logging.WARNING)
    operator = VantaxBulkSendMessageOperator(
        task_id="bulk", recipients=recipients(n, prefix), max_concurrency=concurrency, **MESSAGE_FIELDS
    )
    hook = operator._make_hook()
    _ = hook.settings  # the connection is read, as execute() would, before the start line
    (gate / f"ready_{prefix}").touch()
    waited = time.perf_counter()
    while not (gate / "go").exists():
        time.sleep(0.01)
    late = time.perf_counter() - waited
    started = time.perf_counter()
    result = operator.execute(context())
    elapsed = time.perf_counter() - started
    return {"sent": result["sent"], "failed": result["failed"], "late": late, "elapsed": elapsed}


def main() -> None:
    if sys.argv[1] != "worker":
        raise SystemExit(f"unknown mode {sys.argv[1]!r}")
    out = worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5]))
    print("RATE " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
