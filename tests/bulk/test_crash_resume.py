"""
Crash-resume for real: the worker running a bulk send is SIGKILLed mid-batch, then the same task
instance runs again (as the scheduler does after a lost worker) and again after that.

Each run is its own Python process with the real Airflow task runner and ``task_state_store``
(SQLite metadata DB); the emulator counts what was really created.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from vantax_dagtest import dags_folder

N = 150
RATE = 50.0
DAG_ID = "vx_bulk_crash"  # the dedup=True case

_DAG = """
from datetime import datetime
from airflow.sdk import DAG
from vantax_provider.operators.vantax_bulk import VantaxBulkSendMessageOperator

with DAG("{dag_id}", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
    VantaxBulkSendMessageOperator(
        task_id="bulk",
        recipients=[{{"cid": f"conv_c{{i:03d}}"}} for i in range({n})],
        conversation_id="{{{{ recipient.cid }}}}",
        channel="email",
        subject="s",
        content="Hello {{{{ recipient.cid }}}}",
        rate_limit={rate},
        max_concurrency={concurrency},
        max_uncertain={max_uncertain},
        checkpoint_interval=0.2,
        on_uncertain="{on_uncertain}",
        max_failure_ratio=1.0,
    )
"""

_RUNNER = """
import importlib.util, json, sys
from datetime import datetime, timezone
spec = importlib.util.spec_from_file_location("vx_crash_dag", sys.argv[1])
module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
dag = module.dag
when = datetime(2025, 4, 1, tzinfo=timezone.utc)
if sys.argv[2] == "first":
    dag.test(logical_date=when, run_after=when)
    sys.exit(0)
# Run the same task instance again, twice, as the scheduler does after a lost worker: new tries of it.
from sqlalchemy import select
from airflow.models.dagrun import DagRun
from airflow.models.xcom import XComModel
from airflow.sdk.definitions.dag import _run_task
from airflow.utils.session import create_session
from airflow.utils.state import TaskInstanceState
retries, key = (int(sys.argv[3]), sys.argv[4]) if len(sys.argv) > 4 else (2, "return_value")
for _ in range(retries):
    with create_session() as session:
        run = session.scalar(select(DagRun).where(DagRun.dag_id == dag.dag_id, DagRun.logical_date == when))
        ti = run.get_task_instance("bulk", session=session)
        ti.prepare_db_for_next_try(session)
        ti.try_number += 1
        ti.state = TaskInstanceState.SCHEDULED
        session.commit()
        session.refresh(ti)
        _run_task(ti=ti, task=dag.task_dict["bulk"])
    with create_session() as session:
        row = session.scalars(XComModel.get_many(run_id=run.run_id, dag_ids=dag.dag_id, task_ids="bulk",
                                                 key=key)).first()
        result = XComModel.deserialize_value(row)
        summary = {k: v for k, v in result.items() if k != "outcomes"}
        summary["maybe"] = [o["conversation_id"] for o in result["outcomes"] if o["outcome"] == "maybe_sent"]
        print("RESULT " + json.dumps(summary), flush=True)
"""


def _start(script: Path, dag_file: Path, mode: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(script), str(dag_file), mode, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy(),
    )  # fmt: skip


def _files(tmp_path: Path, dag_id: str, **params: object) -> tuple[Path, Path]:
    dag_file = dags_folder() / f"{dag_id}.py"
    dag_file.write_text(_DAG.format(dag_id=dag_id, **params))
    script = tmp_path / "runner.py"
    script.write_text(_RUNNER)
    return script, dag_file


def _kill_mid_batch(emu, script: Path, dag_file: Path, *, at: int, n: int) -> int:  # type: ignore[no-untyped-def]
    """Start the first try, SIGKILL it once ``at`` messages exist, and return how many exist after."""
    first = _start(script, dag_file, "first")
    try:
        deadline = time.monotonic() + 300
        while emu.stats()["created"] < at:
            assert first.poll() is None, "the first run ended before it could be killed"
            assert time.monotonic() < deadline, "the first run never got going"
            time.sleep(0.02)
    finally:
        os.kill(first.pid, signal.SIGKILL)  # also when the wait failed: it must not send into the next test
        first.wait(30)
    # Requests the emulator already received when the client died may still complete: wait for quiet.
    created_at_kill = -1
    while created_at_kill != emu.stats()["created"]:
        created_at_kill = emu.stats()["created"]
        time.sleep(0.3)
    assert created_at_kill < n, "the first run finished before the kill"
    return created_at_kill


def _results(process: subprocess.Popen[str]) -> list[dict[str, int]]:
    import json

    out, _ = process.communicate(timeout=180)
    assert process.returncode == 0, out[-3000:]
    return [
        json.loads(line.removeprefix("RESULT ")) for line in out.splitlines() if line.startswith("RESULT ")
    ]


@pytest.mark.airflow_3_3  # task_state_store
@pytest.mark.timeout(900)  # a dag.test() start-up per try; the first test also migrates the DB
@pytest.mark.slow  # a SIGKILL crash test, run with the others after `make test`
def test_sigkill_mid_batch_then_retry_sends_each_recipient_once(dag_env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    emu = dag_env
    script, dag_file = _files(
        tmp_path, DAG_ID, n=N, rate=RATE, concurrency=8, max_uncertain=None, on_uncertain="resend"
    )
    created_at_kill = _kill_mid_batch(emu, script, dag_file, at=60, n=N)
    posts_before = sum(1 for r in emu.requests() if r["method"] == "POST")

    second, third = _results(_start(script, dag_file, "resume"))
    posts_after = sum(1 for r in emu.requests() if r["method"] == "POST") - posts_before
    stats = emu.stats()
    assert stats["created"] == N, stats  # everyone, and nobody twice
    conversations = [m["conversation_id"] for m in emu.messages()]
    assert sorted(conversations) == [f"conv_c{i:03d}" for i in range(N)]
    # The retry skipped what the checkpoint recorded; only the last unrecorded moments were re-sent,
    # under the same Idempotency-Keys, which the service replayed instead of creating again.
    # Everything created before the kill is accounted for: skipped by the checkpoint, or re-posted
    # and replayed by the service (only the moments after the last checkpoint).
    assert second["skipped_already_sent"] + stats["replayed"] == created_at_kill, (created_at_kill, second)
    assert second["skipped_already_sent"] > 0, "the checkpoint recorded nothing before the kill"
    assert second["skipped_already_sent"] + second["sent"] == N and second["failed"] == 0
    assert second["sent"] - stats["replayed"] == N - created_at_kill
    # The run after that sends nothing at all: every POST after the kill came from the first retry.
    assert third["skipped_already_sent"] == N and third["sent"] == 0
    assert posts_after == second["sent"]
    print(
        f"\nkilled at {created_at_kill} created; retry skipped {second['skipped_already_sent']}, "
        f"re-sent {stats['replayed']} in flight (replayed), sent {N - created_at_kill} new"
    )


@pytest.mark.airflow_3_3  # task_state_store
@pytest.mark.timeout(900)  # a dag.test() start-up per try; the first test also migrates the DB
@pytest.mark.slow
@pytest.mark.parametrize(
    ("on_uncertain", "max_uncertain"), [("resend", None), ("skip", None), ("resend", 24)]
)
def test_sigkill_without_deduplication_by_the_service(  # type: ignore[no-untyped-def]
    dag_env, tmp_path: Path, on_uncertain: str, max_uncertain: int | None
) -> None:
    """
    Issue 14: the service ignores Idempotency-Key, so only the provider prevents duplicates.

    The duplicates after a crash are bounded by the requests in flight (max_concurrency), or by
    ``max_uncertain`` when it lists messages ahead, not by the checkpoint cadence; with
    on_uncertain="skip" there are none, and every recipient that was not re-sent is listed as
    maybe_sent.
    """
    emu = dag_env
    emu.configure(deduplicate=False, latency_ms=30)
    n, concurrency = 300, 8
    bound = max_uncertain or concurrency
    dag_id = f"vx_bulk_crash_nodedup_{on_uncertain}_{bound}"
    script, dag_file = _files(
        tmp_path, dag_id, n=n, rate=120.0, concurrency=concurrency, max_uncertain=max_uncertain,
        on_uncertain=on_uncertain,
    )  # fmt: skip
    created_at_kill = _kill_mid_batch(emu, script, dag_file, at=80, n=n)

    second, third = _results(_start(script, dag_file, "resume"))
    created = Counter(m["conversation_id"] for m in emu.messages())
    everyone = {f"conv_c{i:03d}" for i in range(n)}
    duplicates = sum(c - 1 for c in created.values())
    listed = set(second["maybe"])
    # Nobody lost without being listed: each recipient has a message or is listed as maybe_sent.
    assert everyone - set(created) <= listed, sorted(everyone - set(created) - listed)
    assert set(created) <= everyone
    if on_uncertain == "resend":
        assert duplicates <= bound, (duplicates, created_at_kill)
        assert set(created) == everyone and not listed
    else:
        assert duplicates == 0, [c for c, k in created.items() if k > 1]
        assert len(listed) <= bound and second["maybe_sent"] == len(listed)
        assert set(created) | listed == everyone
        assert third["maybe"] == second["maybe"]  # they stay listed on every later try
    assert second["sent"] + second["skipped_already_sent"] + second["maybe_sent"] == n
    assert third["sent"] == 0 and third["failed"] == 0
    print(
        f"\n{on_uncertain}: killed at {created_at_kill} created; retry skipped "
        f"{second['skipped_already_sent']}, sent {second['sent']}, maybe_sent {second['maybe_sent']}; "
        f"duplicates {duplicates} (max_concurrency {concurrency}, max_uncertain {bound})"
    )


_WAIT_DAG = """
from datetime import datetime
from airflow.sdk import DAG
from vantax_provider.operators.vantax_bulk import VantaxBulkSendMessageOperator

with DAG("{dag_id}", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
    VantaxBulkSendMessageOperator(
        task_id="bulk",
        recipients=[{{"cid": f"conv_{{'fail_' if i in (4, 11) else ''}}cw{{i:02d}}"}} for i in range({n})],
        conversation_id="{{{{ recipient.cid }}}}",
        channel="email",
        subject="s",
        content="Hello {{{{ recipient.cid }}}}",
        wait_for_delivery=True,
        deferrable=False,
        poll_interval=0.2,
        delivery_timeout=120,
        checkpoint_interval=0.2,
    )
"""


@pytest.mark.airflow_3_3  # task_state_store
@pytest.mark.timeout(900)
@pytest.mark.slow
def test_sigkill_during_the_wait_then_a_retry_waits_for_every_message(dag_env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """
    Try 1 sends 20 messages and is killed while it waits for their delivery; the retry sends nothing,
    waits for all 20 (two of which end ``failed``) and fails by the failure policy, listing them.
    """
    from vantax_provider.operators.vantax_bulk import FAILED_RESULT_XCOM_KEY

    emu = dag_env
    emu.configure(sent_seconds=3.0)  # the wait is under way for a few seconds
    n, dag_id = 20, "vx_bulk_crash_wait"
    dag_file = dags_folder() / f"{dag_id}.py"
    dag_file.write_text(_WAIT_DAG.format(dag_id=dag_id, n=n))
    script = tmp_path / "runner.py"
    script.write_text(_RUNNER)
    first = _start(script, dag_file, "first")
    try:
        deadline = time.monotonic() + 300
        while not any(r["method"] == "GET" for r in emu.requests()):  # the wait has begun
            assert first.poll() is None, "the first run ended before it could be killed"
            assert time.monotonic() < deadline, "the first run never began to wait"
            time.sleep(0.05)
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait(30)
    assert emu.stats()["created"] == n
    gets_before = len(emu.requests())

    [second] = _results(_start(script, dag_file, "resume", "1", FAILED_RESULT_XCOM_KEY))
    assert sum(r["method"] == "POST" for r in emu.requests()) == n  # nothing sent again
    read = {r["conversation_id"] for r in emu.requests()[gets_before:] if r["method"] == "GET"}
    assert len(read) == n  # the retry read every message again
    assert (second["sent"], second["skipped_already_sent"]) == (0, n)
    counts = second["delivery"]["counts"]
    assert (counts["success"], counts["failure"]) == (n - 2, 2), second["delivery"]
    undelivered = sorted(u["conversation_id"] for u in second["delivery"]["undelivered"])
    assert undelivered == ["conv_fail_cw04", "conv_fail_cw11"]
