"""
A real deployment (api-server, scheduler with LocalExecutor, dag-processor, triggerer; SQLite) at
the timings users meet: messages delivered in under a second, several runs at once, repeated.

Each run has a deferred send-and-wait, a send followed by a deferred sensor, and a bulk send with
a deferred wait.  Airflow 3.3's scheduler can fail a deferred task whose trigger fires before it
has handled the executor's event for the deferring exit (apache/airflow#71580, #72716); the
provider looks in the worker before deferring and holds a trigger's event for a settle time
(docs/reliability.md, "Deferred waits").  With ``retries=0`` any task failed by that race fails its
run here.  (Clearing is tested with ``dag.test()``-free task contexts in tests/operators/test_send_once.py.)
"""

from __future__ import annotations

import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from airflow_cluster import AirflowCluster

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

RUNS_AT_ONCE = 4
ROUNDS = 2
BULK = 5

DAG_SOURCE = """
from datetime import datetime
from airflow.sdk import DAG
from vantax_provider.operators.vantax import VantaxBulkSendMessageOperator, VantaxSendMessageOperator
from vantax_provider.sensors.vantax import VantaxMessageStatusSensor

with DAG("e2e_vantax", schedule=None, start_date=datetime(2025, 1, 1), catchup=False,
         max_active_runs=8, default_args={"retries": 0}, is_paused_upon_creation=True) as dag:
    VantaxSendMessageOperator(
        task_id="send_and_wait", conversation_id="conv_e2e_wait", channel="facebook",
        content="e2e wait {{ run_id }}", wait_for_delivery=True, deferrable=True, poll_interval=0.5,
        delivery_timeout=120,
    )
    send = VantaxSendMessageOperator(
        task_id="send", conversation_id="conv_e2e_sensor", channel="sms", from_phone_number_id="pn_e2e",
        content="e2e sensor {{ run_id }}",
    )
    send >> VantaxMessageStatusSensor(
        task_id="wait", conversation_id="conv_e2e_sensor",
        message_id="{{ ti.xcom_pull(task_ids='send', key='message_id') }}",
        deferrable=True, poke_interval=0.5, timeout=120,
    )
    VantaxBulkSendMessageOperator(
        task_id="bulk", recipients=[{"n": n} for n in range(%(bulk)d)],
        conversation_id="conv_e2e_bulk_{{ recipient.n }}", channel="facebook",
        content="e2e bulk {{ recipient.n }} {{ run_id }}", wait_for_delivery=True, deferrable=True,
        poll_interval=0.5, delivery_timeout=120,
    )
"""
TASKS = ("send_and_wait", "send", "wait", "bulk")


def _task_log(cluster: AirflowCluster, run_id: str, task_id: str) -> str:
    folder = cluster.home / "logs" / "dag_id=e2e_vantax" / f"run_id={run_id}" / f"task_id={task_id}"
    return "".join(p.read_text(errors="replace") for p in sorted(folder.glob("**/*.log")))


def test_deferred_waits_at_realistic_timing_with_concurrent_runs(
    tmp_path: Path, vantax_emulator: Any
) -> None:
    vantax_emulator.configure(queued_seconds=0.2, sent_seconds=0.4)  # delivered 0.6 s after the POST
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "e2e_vantax.py").write_text(textwrap.dedent(DAG_SOURCE % {"bulk": BULK}))
    run_ids: list[str] = []
    # A shared two-core CI box: give the task runners' calls to the execution API time to be answered.
    env = {**vantax_emulator.airflow_env(), "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60"}
    with AirflowCluster(tmp_path / "home", dags, env=env, parallelism=4) as cluster:
        cluster.wait_for_dag("e2e_vantax")
        for round_ in range(ROUNDS):
            if round_:
                cluster.airflow("dags", "pause", "e2e_vantax")
            # Queued while the DAG is paused, then started together: the runs overlap.
            batch = [cluster.trigger("e2e_vantax") for _ in range(RUNS_AT_ONCE)]
            cluster.airflow("dags", "unpause", "e2e_vantax")
            states = {run_id: cluster.wait_for_run("e2e_vantax", run_id, timeout=300) for run_id in batch}
            tis = {r: {ti["task_id"]: (ti["state"], ti["try_number"]) for ti in cluster.task_instances(
                "e2e_vantax", r)} for r in batch}  # fmt: skip
            if set(states.values()) != {"success"}:
                pytest.fail(f"runs ended {states}: {tis}\n{cluster.dump_logs()}")
            assert all(t == {task: ("success", 1) for task in TASKS} for t in tis.values()), tis
            run_ids += batch
        # The bulk wait always defers, and its trigger has the outcome at its first read (the worst case
        # for the race): its task log shows the event held for the settle time.
        held = [r for r in run_ids if "Holding the event" in _task_log(cluster, r, "bulk")]
        assert held, "no deferred wait resumed early enough to need the settle time: the race was not tried"

    messages = vantax_emulator.messages()
    per_content = Counter(m["body"]["content"] for m in messages)
    expected: Counter[str] = Counter()
    for run_id in run_ids:
        expected[f"e2e wait {run_id}"] += 1
        expected[f"e2e sensor {run_id}"] += 1
        for n in range(BULK):
            expected[f"e2e bulk {n} {run_id}"] += 1
    assert per_content == expected
    assert {m["status"] for m in messages} == {"delivered"}
