"""
Throughput through a real DAG run (issue 10, section 4): the bulk operator run by ``dag.test()`` in
its own process and Airflow home, against a bare ``httpx.AsyncClient`` loop, in the same run, on
the same emulator settings.

Throughput is the server's: the span from the first to the last create in the emulator's own
request log (``t`` is its arrival time), the same measurement for both senders, so process start,
Airflow's imports and the DAG run's bookkeeping before and after the sends do not count.

``python -m bench._dagrun dag FILE DAG_ID`` runs one DAG (the child); ``python -m bench._dagrun bare
N C PREFIX`` is the bare loop in a fresh process (the connection from ``AIRFLOW_CONN_VANTAX_DEFAULT``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from demo import airflow_env

REPO = Path(__file__).resolve().parents[1]
RESULT = "DAGRUN "

#: The DAG each bulk run executes: the same message fields as the bare loop's bodies.
_DAG = """
from datetime import datetime
from airflow.sdk import DAG
from vantax_provider.operators.vantax_bulk import VantaxBulkSendMessageOperator

RECIPIENTS = [{{"cid": f"{prefix}_{{i:06d}}", "name": f"Customer {{i}}", "plan": "pro"}} for i in range({n})]

with DAG("{dag_id}", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
    VantaxBulkSendMessageOperator(
        task_id="bulk",
        recipients=RECIPIENTS,
        conversation_id="{{{{ recipient.cid }}}}",
        channel="email",
        subject="Your {{{{ recipient.plan }}}} plan",
        content="Hi {{{{ recipient.name }}}}, your {{{{ recipient.plan }}}} plan renews on {{{{ ds }}}}.",
        max_concurrency={concurrency},
        max_uncertain={max_uncertain},
        wait_for_delivery=False,
    )
"""


def server_span(emu: Any) -> dict[str, Any]:
    """The emulator's figures for the creates it logged since its last reset."""
    log = [r for r in emu.requests() if r["kind"] == "create" and r["status"] == 201]
    created = sorted(r["t"] for r in log)
    span = created[-1] - created[0] if len(created) > 1 else float("nan")
    rate = (len(created) - 1) / span if span > 0 else float("nan")
    # Mean requests open at the server over the span: how full the sender kept its slots.
    busy = sum(r["duration"] for r in log) / span if span > 0 else float("nan")
    return {"created": len(created), "span": span, "rate": rate, "server_in_flight": busy}


class DagRunBench:
    """
    One Airflow home (SQLite, migrated once) with a bulk DAG per concurrency, and the steps that
    run them or the bare loop against ``emu``.
    """

    def __init__(self, emu: Any, home: Path, n: int) -> None:
        self.emu, self.home, self.n = emu, home, n
        self.env = airflow_env(home, emu.airflow_env(), logging_level="INFO")
        (home / "dags").mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"], env=self.env, check=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO,
        )  # fmt: skip
        self.log = home / "runs.log"

    def _child(self, *args: str) -> dict[str, Any]:
        with self.log.open("a") as out:
            out.write(f"\n=== {' '.join(args)}\n")
            out.flush()
            code = subprocess.run(
                [sys.executable, "-m", "bench._dagrun", *args], env=self.env, stdout=out,
                stderr=subprocess.STDOUT, cwd=REPO, timeout=600,
            ).returncode  # fmt: skip
        text = self.log.read_text(errors="replace")
        line = next((x for x in reversed(text.splitlines()) if x.startswith(RESULT)), None)
        if code != 0 or line is None:
            raise RuntimeError(f"bench child {args} failed ({code}):\n" + "\n".join(text.splitlines()[-60:]))
        return dict(json.loads(line.removeprefix(RESULT)))

    def bulk(self, concurrency: int, tag: str, max_uncertain: int | None = None) -> dict[str, Any]:
        """One DAG run of the bulk operator; the emulator's span of its creates."""
        dag_id = f"bench_bulk_{tag}"
        path = self.home / "dags" / f"{dag_id}.py"
        source = _DAG.format(
            dag_id=dag_id,
            n=self.n,
            prefix=f"conv_{tag}",
            concurrency=concurrency,
            max_uncertain=max_uncertain,
        )
        path.write_text(textwrap.dedent(source))
        self.emu.reset()
        child = self._child("dag", str(path), dag_id)
        if child["state"] != "success":
            raise RuntimeError(f"the bulk DAG run ended {child['state']}; see {self.log}")
        return {**server_span(self.emu), **child}

    def bulk_without_journal(self, concurrency: int, tag: str) -> dict[str, Any]:
        """Diagnosis: the same DAG run with no state store, so no request waits for a journal write."""
        self.env["BENCH_NO_JOURNAL"] = "1"
        try:
            return self.bulk(concurrency, tag)
        finally:
            del self.env["BENCH_NO_JOURNAL"]

    def ahead(self, concurrency: int, tag: str) -> dict[str, Any]:
        """The bulk operator with ``max_uncertain`` = 2 C: the next messages listed ahead."""
        return self.bulk(concurrency, tag, max_uncertain=2 * concurrency)

    def bare(self, concurrency: int, tag: str) -> dict[str, Any]:
        """The bare loop in a fresh process; the emulator's span of its creates."""
        self.emu.reset()
        child = self._child("bare", str(self.n), str(concurrency), f"conv_{tag}")
        return {**server_span(self.emu), **child}


def run_dag(path: str, dag_id: str) -> dict[str, Any]:
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"bench_dag_{dag_id}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    stats = _journal_stats()
    if os.environ.get("BENCH_NO_JOURNAL"):  # diagnosis only: the same run without the write-ahead
        from vantax_provider import task_state

        task_state.state_store = lambda context: None  # type: ignore[assignment]
    profile_to = os.environ.get("BENCH_PROFILE")
    started = time.perf_counter()
    if profile_to:
        import cProfile

        profiler = cProfile.Profile()
        run = profiler.runcall(module.dag.test)
        profiler.dump_stats(profile_to)
    else:
        run = module.dag.test()
    return {"state": str(run.state), "wall": time.perf_counter() - started, **stats}


def _journal_stats() -> dict[str, Any]:
    """The journal's write count and time of the run, filled in when it closes (for the profile)."""
    from vantax_provider.bulk.journal import Journal

    stats: dict[str, Any] = {}
    close = Journal.close

    async def counted(self: Journal) -> None:
        await close(self)
        stats.update(journal_writes=self.writes, journal_write_seconds=self.write_seconds)

    Journal.close = counted  # type: ignore[method-assign]
    return stats


def bare(n: int, concurrency: int, prefix: str) -> dict[str, Any]:
    """
    What a user would write: one ``httpx.AsyncClient`` with httpx's default pool (100 connections,
    enough for 64 in flight), ``concurrency`` workers posting the same bodies as the DAG's.
    """
    import asyncio

    import httpx

    conn = json.loads(os.environ["AIRFLOW_CONN_VANTAX_DEFAULT"])
    headers = {"Authorization": f"Bearer {conn['password']}"}

    retried = 0

    async def run() -> None:
        nonlocal retried
        async with httpx.AsyncClient(base_url=conn["host"], headers=headers, timeout=30) as client:
            indexes = iter(range(n))

            async def worker() -> None:
                nonlocal retried
                for i in indexes:
                    body = {"channel": "email", "subject": "Your pro plan",
                            "content": f"Hi Customer {i}, your pro plan renews on 2025-01-01."}  # fmt: skip
                    for attempt in range(3):  # a reset keep-alive connection: again, under the same key
                        try:
                            response = await client.post(
                                f"/v1/conversations/{prefix}_{i:06d}/messages", json=body,
                                headers={"Idempotency-Key": f"bare-{prefix}-{i}"},
                            )  # fmt: skip
                        except httpx.TransportError:
                            if attempt == 2:
                                raise
                            retried += 1
                            continue
                        break
                    assert response.status_code in (200, 201), response.text

            await asyncio.gather(*(worker() for _ in range(concurrency)))

    started = time.perf_counter()
    asyncio.run(run())
    return {"state": "success", "wall": time.perf_counter() - started, "retried": retried}


def measure(
    latency_ms: float, n: int, concurrencies: tuple[int, ...], rounds: int, *, diagnose: bool = True
) -> dict[str, list[dict[str, Any]]]:
    """
    Interleaved rounds (forwards, then backwards) of the bare loop and the DAG run at each
    concurrency, the DAG run once by default and once with ``max_uncertain`` = 2 C (``ahead``);
    with ``diagnose``, one more DAG run per concurrency without the journal.
    """
    from vantax_provider.emulator.testing import running_emulator

    runs: dict[str, list[dict[str, Any]]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="vantax-bench-dagrun-") as tmp,
        running_emulator(latency_ms=latency_ms) as emu,
    ):
        bench = DagRunBench(emu, Path(tmp), n)
        steps = [(f"{kind}_{c}", kind, c) for c in concurrencies for kind in ("bare", "bulk", "ahead")]
        bench.bare(concurrencies[0], "warm")  # warm-up: file caches, the emulator's first connections
        for round_ in range(rounds):
            for name, kind, c in steps if round_ % 2 == 0 else steps[::-1]:
                step = {"bare": bench.bare, "bulk": bench.bulk, "ahead": bench.ahead}[kind]
                runs.setdefault(name, []).append(step(c, f"{name}_{round_}"))
        if diagnose:
            for c in concurrencies:
                runs[f"nojournal_{c}"] = [bench.bulk_without_journal(c, f"nojournal_{c}")]
    return runs


def main() -> None:
    mode = sys.argv[1]
    if mode == "dag":
        out = run_dag(sys.argv[2], sys.argv[3])
    elif mode == "bare":
        out = bare(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    print(RESULT + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
