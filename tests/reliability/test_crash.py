"""
Crashes in a real Airflow deployment (api-server, scheduler with LocalExecutor, dag-processor,
triggerer; SQLite): the task process is SIGKILLed

(a) in the middle of a bulk send to 600 recipients (emulator latency makes it last seconds), and
(b) after a single send, once its wait for delivery has begun.

Airflow's own retry (retries=1, 1 s delay) then runs the task instance again.  Every recipient
must have exactly one message, counted on the emulator per conversation.  The task records its
PID in a file as it starts, so the test kills exactly that process.  Afterwards the deployment's
task logs and metadata DB are scanned for the API key.
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

import pytest

from tests.reliability._support import FAST_EXTRAS, figures
from vantax_provider.emulator.testing import Emulator, running_emulator

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

KEY = "vx_test_CRASH" + secrets.token_hex(8)
N = 600

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

with DAG(
    "vx_crash_bulk", schedule=None, start_date=datetime(2025, 1, 1), catchup=False, default_args=RETRY
):
    VantaxBulkSendMessageOperator(
        task_id="bulk", recipients=[{{"cid": f"conv_crash_{{i:04d}}"}} for i in range({n})],
        conversation_id="{{{{ recipient.cid }}}}", channel="facebook",
        content="Hello {{{{ recipient.cid }}}}",
        max_concurrency=8, checkpoint_interval=0.2,
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


def test_sigkill_mid_send_then_airflow_retry_sends_each_message_once(tmp_path: Path) -> None:
    from tests.e2e.airflow_cluster import AirflowCluster

    pids = tmp_path / "pids"
    pids.mkdir()
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "vx_crash.py").write_text(textwrap.dedent(DAG_SOURCE.format(pids=str(pids), n=N)))
    with running_emulator(api_key=KEY, latency_ms=40) as emu:
        conn = json.loads(emu.connection_json())
        conn["extra"] = FAST_EXTRAS
        env = {"AIRFLOW_CONN_VANTAX_DEFAULT": json.dumps(conn)}
        with AirflowCluster(tmp_path / "home", dags, env=env) as cluster:
            bulk = _bulk_case(cluster, emu, pids)
            single = _single_case(cluster, emu, pids)
            leaks = _scan_for_key(tmp_path / "home")
    f = figures("crash")
    f.cases += 2
    f.faults_applied += 2
    f.survived += int(bulk["ok"]) + int(single["ok"])
    f.duplicates += bulk["duplicates"] + single["duplicates"]
    f.leaks += len(leaks)
    f.extra.update({
        "bulk_sent_before_kill": bulk["before_kill"], "bulk_replayed": bulk["replayed"],
        "single_posts": single["posts"],
    })  # fmt: skip
    assert bulk["ok"] and single["ok"], (bulk, single)
    assert leaks == []


def _bulk_case(cluster, emu: Emulator, pids: Path) -> dict[str, object]:  # type: ignore[no-untyped-def]
    cluster.wait_for_dag("vx_crash_bulk")
    run_id = cluster.trigger("vx_crash_bulk")
    _wait(lambda: (pids / "vx_crash_bulk.1.pid").exists(), 120, "the bulk task to start")
    # Mid-batch: a third of the recipients sent, most still to go.
    _wait(lambda: emu.stats()["created"] >= N // 3, 120, "a third of the batch")
    _kill(pids / "vx_crash_bulk.1.pid")
    before_kill = emu.stats()["created"]
    state = cluster.wait_for_run("vx_crash_bulk", run_id, timeout=240)
    [ti] = cluster.task_instances("vx_crash_bulk", run_id)
    per_conversation = Counter(
        m["conversation_id"] for m in emu.messages() if "single" not in m["conversation_id"]
    )
    stats = emu.stats()
    assert before_kill < N, "the batch finished before the kill: nothing was tested"
    assert state == "success" and ti["try_number"] == 2, (state, ti, cluster.dump_logs())
    assert (pids / "vx_crash_bulk.2.pid").exists()
    assert len(per_conversation) == N and set(per_conversation.values()) == {1}
    return {
        "ok": True, "before_kill": before_kill, "replayed": stats["replayed"],
        "duplicates": sum(n - 1 for n in per_conversation.values()),
    }  # fmt: skip


def _single_case(cluster, emu: Emulator, pids: Path) -> dict[str, object]:  # type: ignore[no-untyped-def]
    emu.configure(latency_ms=0, queued_seconds=3, sent_seconds=1)  # a wait of a few seconds
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
