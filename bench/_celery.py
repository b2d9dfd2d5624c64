"""
``python -m bench celery [recipients] [chunks]``: a large outreach in mapped chunks on Celery.

The e2e harness (``tests/e2e/celery_cluster.py``: PostgreSQL, Redis, two Celery workers, scheduler,
dag-processor, triggerer, api-server) runs one DAG: ``recipients`` (100,000 by default) split into
``chunks`` mapped bulk sends, each waiting for delivery in the triggerer.  Reported:

- wall time from trigger to the run's end, and messages/s (the emulator's count of created messages);
- peak RSS (``VmHWM``) of each worker and of the triggerer, the main process and its largest child
  (the task processes a worker forks), sampled every half second;
- XCom bytes per key (PostgreSQL ``octet_length`` of the stored JSON) and the trigger kwargs' bytes
  (the largest seen while the run deferred; triggers are deleted once they fire);
- metadata-DB rows written per table (``pg_stat_user_tables``: inserts, updates, deletes during the run).

A bench, not a test: it asserts only that every recipient got exactly one message.
"""

from __future__ import annotations

import os
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DAG_ID = "bench_celery_outreach"
DEFAULT_RECIPIENTS = 100_000
DEFAULT_CHUNKS = 20

_DAG = """
from datetime import datetime, timedelta
from airflow.sdk import DAG, task
from vantax_provider.operators.vantax_bulk import VantaxBulkSendMessageOperator

with DAG("{dag_id}", schedule=None, start_date=datetime(2025, 1, 1), catchup=False) as dag:

    @task
    def chunks():
        rows = [{{"cid": f"conv_b_{{i:06d}}", "name": f"Customer {{i}}"}} for i in range({n})]
        size = -(-{n} // {chunks})
        return [rows[i : i + size] for i in range(0, {n}, size)]

    VantaxBulkSendMessageOperator.partial(
        task_id="send_chunk", conversation_id="{{{{ recipient.cid }}}}", channel="email",
        subject="Your renewal", content="Hi {{{{ recipient.name }}}}, your plan renews next month.",
        max_concurrency=32, wait_for_delivery=True, deferrable=True, poll_interval=5,
        delivery_timeout=3600, retries=2, retry_delay=timedelta(seconds=5), progress_interval=30,
    ).expand(recipients=chunks())
"""


def _hwm_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class _Sampler(threading.Thread):
    """Every half second: each component's VmHWM, its children's, and the trigger kwargs' size."""

    def __init__(self, cluster: Any, names: list[str]) -> None:
        super().__init__(daemon=True)
        self.cluster, self.names = cluster, names
        self.main: dict[str, int] = dict.fromkeys(names, 0)
        self.child: dict[str, dict[int, int]] = {n: {} for n in names}
        self.trigger_bytes: Counter[str] = Counter()  # classpath -> largest kwargs seen
        self.triggers_seen: set[int] = set()
        self.stop = threading.Event()

    def run(self) -> None:
        import psutil

        while not self.stop.is_set():
            for name in self.names:
                pid = self.cluster.components[name].process.pid
                self.main[name] = max(self.main[name], _hwm_kb(pid))
                try:
                    children = psutil.Process(pid).children(recursive=True)
                except psutil.NoSuchProcess:
                    continue
                for child in children:
                    seen = self.child[name]
                    seen[child.pid] = max(seen.get(child.pid, 0), _hwm_kb(child.pid))
            try:
                for tid, classpath, size in self.cluster.query(
                    "SELECT id, classpath, octet_length(kwargs) FROM trigger"
                ):
                    self.triggers_seen.add(tid)
                    short = classpath.rsplit(".", 1)[-1]
                    self.trigger_bytes[short] = max(self.trigger_bytes[short], int(size))
            except Exception:  # the DB is busy: the next sample will do
                pass
            self.stop.wait(0.5)


def _table_stats(cluster: Any) -> dict[str, tuple[int, int, int, int]]:
    rows = cluster.query(
        "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del, n_live_tup FROM pg_stat_user_tables"
    )
    return {r[0]: (int(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in rows}


def run(recipients: int = DEFAULT_RECIPIENTS, chunks: int = DEFAULT_CHUNKS) -> None:
    sys.path.insert(0, str(REPO / "tests" / "e2e"))
    from celery_cluster import CeleryCluster, missing_servers

    from vantax_provider.emulator.testing import running_emulator

    missing = missing_servers()
    if missing:
        raise SystemExit(f"bench celery needs {', '.join(missing)} (Debian's postgresql and redis-server)")
    print(f"celery deployment: PostgreSQL, Redis, 2 Celery workers (3 slots each), triggerer; "
          f"{recipients:,} recipients in {chunks} mapped chunks, max_concurrency 32 each, deferred "
          "wait for delivery (poll 5 s); emulator: no added latency, delivered ~2 s after creation"
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="vantax-bench-celery-") as tmp:
        root = Path(tmp)
        dags = root / "dags"
        dags.mkdir()
        (dags / f"{DAG_ID}.py").write_text(
            textwrap.dedent(_DAG.format(dag_id=DAG_ID, n=recipients, chunks=chunks))
        )
        with running_emulator(queued_seconds=1, sent_seconds=1) as emu:
            env = {**emu.airflow_env(), "AIRFLOW__CORE__MAX_MAP_LENGTH": str(max(1024, chunks))}
            started = time.perf_counter()
            with CeleryCluster(root / "home", dags, env=env, worker_concurrency=3) as cluster:
                print(f"  deployment up in {time.perf_counter() - started:.0f} s")
                cluster.wait_for_dag(DAG_ID)
                names = [*cluster.workers, "triggerer"]
                before = _table_stats(cluster)
                sampler = _Sampler(cluster, names)
                sampler.start()
                t0 = time.perf_counter()
                run_id = cluster.trigger(DAG_ID)
                state = cluster.wait_for_run(DAG_ID, run_id, timeout=7200)
                wall = time.perf_counter() - t0
                sampler.stop.set()
                sampler.join()
                time.sleep(1.5)  # PostgreSQL flushes its table statistics about once a second
                after = _table_stats(cluster)
                _report(cluster, emu, run_id, state, wall, recipients, sampler, before, after)


def _report(
    cluster: Any, emu: Any, run_id: str, state: str, wall: float, n: int, sampler: _Sampler,
    before: dict[str, tuple[int, int, int, int]], after: dict[str, tuple[int, int, int, int]],
) -> None:  # fmt: skip
    created = [m for m in emu.messages() if m["conversation_id"].startswith("conv_b_")]
    per_conversation = Counter(m["conversation_id"] for m in created)
    delivered = sum(1 for m in created if m["status"] == "delivered")
    print(f"\n  run {state} in {wall:.0f} s: {len(per_conversation):,} of {n:,} recipients got a message, "
          f"most messages to one recipient {max(per_conversation.values(), default=0)}, "
          f"{delivered:,} delivered")  # fmt: skip
    rate = len(created) / wall
    print(f"  throughput (trigger to run end, sending and waiting for delivery): {rate:.0f} messages/s")
    first_last = cluster.query(
        "SELECT min(start_date), max(end_date) FROM task_instance WHERE dag_id = ? AND run_id = ? "
        "AND task_id = 'send_chunk'",
        DAG_ID, run_id,
    )[0]  # fmt: skip
    if first_last[0] and first_last[1]:
        span = (first_last[1] - first_last[0]).total_seconds()
        print(f"  first chunk start to last chunk end: {span:.0f} s")
    hosts = Counter(h for (h,) in cluster.query(
        "SELECT hostname FROM task_instance WHERE dag_id = ? AND run_id = ? AND task_id = 'send_chunk'",
        DAG_ID, run_id))  # fmt: skip
    print(f"  chunks per worker: {dict(hosts)}")
    print("  peak RSS (VmHWM), MB:")
    for name in sampler.names:
        children = sampler.child[name]
        largest = max(children.values(), default=0)
        print(f"    {name:<10} main {sampler.main[name] / 1024:6.0f}   largest child {largest / 1024:6.0f}   "
              f"({len(children)} child processes seen)")  # fmt: skip
    print("  XCom bytes (stored JSON) by task and key:")
    for task_id, key, count, total, largest in cluster.query(
        "SELECT task_id, key, count(*), sum(octet_length(value::text)), max(octet_length(value::text)) "
        "FROM xcom WHERE dag_id = ? AND run_id = ? GROUP BY task_id, key ORDER BY task_id, key",
        DAG_ID, run_id,
    ):  # fmt: skip
        total, largest = int(total or 0), int(largest or 0)
        name = f"{task_id}/{key}"
        print(f"    {name:<38} {count:3d} values, {total:>11,} B in all, largest {largest:>10,} B")
    trig = ", ".join(f"{k} {v:,} B" for k, v in sampler.trigger_bytes.items()) or "none seen"
    seen = len(sampler.triggers_seen)
    print(f"  trigger kwargs (encrypted, as stored; largest seen; {seen} triggers): {trig}")
    next_kwargs = cluster.query(
        "SELECT max(octet_length(coalesce(next_kwargs::text, ''))) FROM task_instance WHERE dag_id = ?",
        DAG_ID,
    )[0][0]
    print(f"  task_instance.next_kwargs: largest {int(next_kwargs or 0)} B")
    print("  metadata-DB rows written during the run (pg_stat_user_tables; inserted / updated / deleted):")
    changes = []
    for table, (ins, upd, dele, _) in after.items():
        b = before.get(table, (0, 0, 0, 0))
        delta = (ins - b[0], upd - b[1], dele - b[2])
        if any(delta):
            changes.append((table, *delta))
    for table, ins, upd, dele in sorted(changes, key=lambda c: -(c[1] + c[2] + c[3])):
        print(f"    {table:<32} {ins:>8,} / {upd:>8,} / {dele:>8,}")
    total = [sum(c[i] for c in changes) for i in (1, 2, 3)]
    print(f"    {'total':<32} {total[0]:>8,} / {total[1]:>8,} / {total[2]:>8,}")
    reports = sorted((Path(cluster.home) / "vantax_reports").rglob("*.jsonl"))
    lines = sum(sum(1 for _ in p.open()) for p in reports if not p.name.endswith(".delivery.jsonl"))
    size = sum(p.stat().st_size for p in reports)
    print(f"  reports: {len(reports)} files, {lines:,} recipient lines, {size / 1e6:.1f} MB "
          f"(under AIRFLOW_HOME/vantax_reports)")  # fmt: skip
    print(f"  load average after: {os.getloadavg()[0]:.2f}")
