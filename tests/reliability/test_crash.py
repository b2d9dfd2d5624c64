"""
Crashes in a real Airflow deployment (api-server, scheduler with LocalExecutor, dag-processor,
triggerer; SQLite): the task process is SIGKILLed

(a) in the middle of a bulk send to 600 recipients (emulator latency makes it last seconds), and
(b) after a single send, once its wait for delivery has begun.

Airflow's own retry (retries=1, 1 s delay) then runs the task instance again.  The task records
its PID in a file as it starts, so the test kills exactly that process.  Afterwards the
deployment's task logs and metadata DB are scanned for the API key.

Twice: against an emulator that honours ``Idempotency-Key`` (every recipient then has exactly one
message, counted on the emulator per conversation), and against one that ignores it, where only
the provider's own record (the bulk journal and the single send's entry in ``task_state_store``)
prevents a second message.  Without deduplication the bulk send runs once with
``on_uncertain="resend"`` and once with ``"skip"``, and the test asserts, from the emulator's log:
no recipient the retry reports ``skipped_already_sent`` is posted after the kill; with
``"resend"`` the duplicates are exactly the messages created before the kill but not on record
(at most ``max_concurrency``, the requests in flight); with ``"skip"`` there are none, and those
same recipients are reported ``maybe_sent`` instead.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.reliability._support import FAST_EXTRAS, figures, settle
from vantax_provider.emulator.testing import Emulator, running_emulator
from vantax_provider.operators.vantax_bulk import read_report

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

KEY = "vx_test_CRASH" + secrets.token_hex(8)
N = 600
CONCURRENCY = 8
#: (DAG id suffix, on_uncertain) of the bulk cases per mode.
BULK_CASES = {True: [("", "resend")], False: [("_resend", "resend"), ("_skip", "skip")]}

DAG_SOURCE = """
import os
from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG
from vantax_provider.operators.vantax_bulk import VantaxBulkSendMessageOperator
from vantax_provider.operators.vantax import VantaxSendMessageOperator

PIDS = Path({pids!r})


def record_pid(context):
    ti = context["ti"]
    (PIDS / f"{{ti.dag_id}}.{{ti.try_number}}.pid").write_text(str(os.getpid()))


RETRY = {{"retries": 1, "retry_delay": timedelta(seconds=1), "pre_execute": record_pid}}

for suffix, on_uncertain in {cases!r}:
    with DAG(
        f"vx_crash_bulk{{suffix}}", schedule=None, start_date=datetime(2025, 1, 1), catchup=False,
        default_args=RETRY,
    ):
        VantaxBulkSendMessageOperator(
            task_id="bulk", recipients=[{{"cid": f"conv_crash{{suffix}}_{{i:04d}}"}} for i in range({n})],
            conversation_id="{{{{ recipient.cid }}}}", channel="facebook",
            content="Hello {{{{ recipient.cid }}}}",
            max_concurrency={concurrency}, checkpoint_interval=0.2, on_uncertain=on_uncertain,
        )

with DAG(
    "vx_crash_single", schedule=None, start_date=datetime(2025, 1, 1), catchup=False, default_args=RETRY
):
    VantaxSendMessageOperator(
        task_id="send", conversation_id="conv_crash_single", channel="facebook", content="Hello once",
        wait_for_delivery=True, deferrable=False, poll_interval=0.3, delivery_timeout=120,
    )
"""


def _wait(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _kill(pid_file: Path) -> int:
    pid = int(pid_file.read_text())
    os.kill(pid, signal.SIGKILL)
    return pid


def _scan_for_key(home: Path) -> list[str]:
    found, task_logs = [], 0
    for path in home.rglob("*"):
        if path.is_file():
            task_logs += "dag_id=vx_crash_" in str(path)
            if KEY.encode() in path.read_bytes():
                found.append(str(path.relative_to(home)))
    # The scan covers the task logs of both DAGs (each try writes one), not an empty folder.
    assert task_logs >= 4, f"only {task_logs} task log files of vx_crash_* under {home}"
    return found


@pytest.mark.parametrize("dedup", [pytest.param(True, id="dedup"), pytest.param(False, id="no-dedup")])
def test_sigkill_mid_send_then_airflow_retry_sends_each_message_once(tmp_path: Path, dedup: bool) -> None:
    from tests.e2e.airflow_cluster import AirflowCluster

    pids = tmp_path / "pids"
    pids.mkdir()
    dags = tmp_path / "dags"
    dags.mkdir()
    source = DAG_SOURCE.format(pids=str(pids), n=N, concurrency=CONCURRENCY, cases=BULK_CASES[dedup])
    (dags / "vx_crash.py").write_text(textwrap.dedent(source))
    with running_emulator(api_key=KEY, latency_ms=40, deduplicate=dedup) as emu:
        conn = json.loads(emu.connection_json())
        conn["extra"] = FAST_EXTRAS
        env = {"AIRFLOW_CONN_VANTAX_DEFAULT": json.dumps(conn)}
        with AirflowCluster(tmp_path / "home", dags, env=env) as cluster:
            f = figures("crash" if dedup else "crash/no-dedup")
            for suffix, on_uncertain in BULK_CASES[dedup]:  # each case's figures kept as it ends
                bulk = _bulk_case(cluster, emu, pids, suffix, on_uncertain, dedup)
                f.cases += 1
                f.faults_applied += 1
                f.survived += 1
                f.duplicates += int(bulk["duplicates"])
                name = "bulk" if dedup else on_uncertain
                counted = "replayed" if dedup else "duplicates"
                keys = ("created_before_kill", "on_record", "maybe_sent", counted)
                f.extra.update({f"{name}_{k}": bulk[k] for k in keys})
            single = _single_case(cluster, emu, pids)
            f.cases += 1
            f.faults_applied += 1
            f.survived += 1
            f.duplicates += int(single["duplicates"])
            f.extra["single_posts"] = single["posts"]
            leaks = _scan_for_key(tmp_path / "home")
    f.leaks += len(leaks)
    assert leaks == []


def _bulk_result(cluster, dag_id: str, run_id: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """The bulk result the last try pushed to XCom, read from the metadata DB."""
    rows = cluster.query(
        "SELECT value FROM xcom WHERE dag_id = ? AND run_id = ? AND task_id = 'bulk' "
        "AND key = 'return_value'",
        dag_id, run_id,
    )  # fmt: skip
    assert len(rows) == 1, rows
    value: Any = rows[0][0]
    while isinstance(value, (str, bytes)):
        value = json.loads(value)
    assert isinstance(value, dict), value
    return value


def _bulk_case(  # type: ignore[no-untyped-def]
    cluster, emu: Emulator, pids: Path, suffix: str, on_uncertain: str, dedup: bool
) -> dict[str, object]:
    dag_id, prefix = f"vx_crash_bulk{suffix}", f"conv_crash{suffix}_"
    everyone = {f"{prefix}{i:04d}" for i in range(N)}

    def mine() -> Counter[str]:
        return Counter(m["conversation_id"] for m in emu.messages() if m["conversation_id"] in everyone)

    cluster.wait_for_dag(dag_id)
    run_id = cluster.trigger(dag_id)
    _wait(lambda: (pids / f"{dag_id}.1.pid").exists(), 120, "the bulk task to start")
    # Mid-batch: a third of the recipients sent, most still to go.
    _wait(lambda: sum(mine().values()) >= N // 3, 120, "a third of the batch")
    replayed_before = emu.stats()["replayed"]
    _kill(pids / f"{dag_id}.1.pid")
    settle(emu)  # the requests on the wire at the kill still reach the server
    before_kill = sum(mine().values())
    kill_mark = len(emu.requests())
    assert not (pids / f"{dag_id}.2.pid").exists(), "the retry started before the kill was measured"
    state = cluster.wait_for_run(dag_id, run_id, timeout=240)
    [ti] = cluster.task_instances(dag_id, run_id)
    assert before_kill < N, "the batch finished before the kill: nothing was tested"
    assert state == "success" and ti["try_number"] == 2, (state, ti, cluster.dump_logs())
    assert (pids / f"{dag_id}.2.pid").exists()

    result = _bulk_result(cluster, dag_id, run_id)
    by_outcome: dict[str, set[str]] = {}
    for o in read_report(result["report"]):  # every recipient's outcome (the XCom lists only failures)
        by_outcome.setdefault(o["outcome"], set()).add(o["conversation_id"])
    on_record, maybe = by_outcome.get("skipped_already_sent", set()), by_outcome.get("maybe_sent", set())
    per_conversation = mine()
    posted_after_kill = {
        r["conversation_id"] for r in emu.requests()[kill_mark:] if r["method"] == "POST"
    } & everyone
    duplicates = sum(n - 1 for n in per_conversation.values())
    replayed = emu.stats()["replayed"] - replayed_before
    uncertain_created = before_kill - len(on_record)  # created by try 1, not in its journal as sent

    # Without the service's help, at most the requests in flight at the kill are sent twice.
    assert duplicates <= CONCURRENCY, (duplicates, before_kill, len(on_record))
    # The journal recorded most of what try 1 sent, and the retry never posts any of it again.
    assert len(on_record) > 0, "the journal recorded nothing before the kill"
    assert on_record <= set(per_conversation) and not on_record & posted_after_kill
    assert 0 <= uncertain_created <= CONCURRENCY, (before_kill, len(on_record))
    assert result["failed"] == 0 and result["invalid"] == 0
    assert result["skipped_already_sent"] + result["sent"] + result["maybe_sent"] == N
    if dedup:
        # Every message on the wire at the kill was re-sent under its key and answered by a replay.
        assert set(per_conversation) == everyone and set(per_conversation.values()) == {1}
        assert replayed == uncertain_created and not maybe
    elif on_uncertain == "resend":
        # The in-flight messages were re-sent; each one the service had created is now there twice.
        assert set(per_conversation) == everyone and not maybe and replayed == 0
        assert duplicates == uncertain_created, (duplicates, before_kill, len(on_record))
        assert {c for c, n in per_conversation.items() if n > 1} <= posted_after_kill - on_record
    else:
        # The in-flight messages were not re-sent: listed maybe_sent, never posted after the kill.
        assert duplicates == 0 and replayed == 0, per_conversation.most_common(3)
        assert 0 < len(maybe) <= CONCURRENCY and result["maybe_sent"] == len(maybe)
        assert not maybe & posted_after_kill and not maybe & on_record
        assert len(maybe & set(per_conversation)) == uncertain_created
        assert set(per_conversation) | maybe == everyone
    return {
        "created_before_kill": before_kill,
        "on_record": len(on_record), "maybe_sent": len(maybe), "replayed": replayed, "duplicates": duplicates,
    }  # fmt: skip


def _single_case(cluster, emu: Emulator, pids: Path) -> dict[str, object]:  # type: ignore[no-untyped-def]
    emu.configure(latency_ms=0, queued_seconds=8, sent_seconds=2)  # a wait long enough to kill it in
    cluster.wait_for_dag("vx_crash_single")
    run_id = cluster.trigger("vx_crash_single")

    def waiting() -> bool:
        return any(
            r["method"] == "GET" and r["conversation_id"] == "conv_crash_single" for r in emu.requests()
        )

    _wait(waiting, 120, "the single send to start waiting for delivery")
    _kill(pids / "vx_crash_single.1.pid")
    state = cluster.wait_for_run("vx_crash_single", run_id, timeout=240)
    [ti] = cluster.task_instances("vx_crash_single", run_id)
    mine = [m for m in emu.messages() if m["conversation_id"] == "conv_crash_single"]
    posts = [
        r for r in emu.requests() if r["method"] == "POST" and r["conversation_id"] == "conv_crash_single"
    ]
    assert state == "success" and ti["try_number"] == 2, (state, ti, cluster.dump_logs())
    assert len(mine) == 1 and mine[0]["status"] == "delivered"
    # Airflow 3.3: the retry found the sent message in task_state_store and did not post again.
    assert len(posts) == 1, posts
    return {"ok": True, "posts": len(posts), "duplicates": len(mine) - 1}
