"""A real scheduler, triggerer, dag-processor and api-server: deferral resumes across processes."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from airflow_cluster import AirflowCluster

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

DAG_SOURCE = """
from datetime import datetime
from airflow.sdk import DAG
from vantax_provider.operators.vantax import VantaxSendMessageOperator
from vantax_provider.sensors.vantax import VantaxMessageStatusSensor

with DAG("e2e_vantax", schedule=None, start_date=datetime(2025, 1, 1), catchup=False) as dag:
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
"""


def test_deferred_waits_resume_in_a_real_deployment(tmp_path: Path, vantax_emulator: Any) -> None:
    # Slow enough delivery that both waits must defer.  Not faster: Airflow 3.3.2's scheduler can fail a
    # task whose trigger fires before it has handled the executor's event for the deferring exit (the
    # resumed run shares the try's executor key: "finished with state success, but ... is queued").
    vantax_emulator.configure(queued_seconds=6, sent_seconds=4)
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "e2e_vantax.py").write_text(textwrap.dedent(DAG_SOURCE))
    with AirflowCluster(tmp_path / "home", dags, env=vantax_emulator.airflow_env()) as cluster:
        cluster.wait_for_dag("e2e_vantax")
        run_id = cluster.trigger("e2e_vantax")
        state = cluster.wait_for_run("e2e_vantax", run_id, timeout=240)
        tis = {ti["task_id"]: ti for ti in cluster.task_instances("e2e_vantax", run_id)}
        if state != "success":
            pytest.fail(f"run ended {state}: {tis}\n{cluster.dump_logs()}")
        assert {t: (ti["state"], ti["try_number"]) for t, ti in tis.items()} == {
            "send_and_wait": ("success", 1),
            "send": ("success", 1),
            "wait": ("success", 1),
        }
        for task_id in ("send_and_wait", "wait"):
            assert "deferred" in cluster.states_seen("e2e_vantax", run_id, task_id), cluster.states_seen(
                "e2e_vantax", run_id, task_id
            )
        assert "deferred" not in cluster.states_seen("e2e_vantax", run_id, "send")
    messages = vantax_emulator.messages()
    assert sorted(m["conversation_id"] for m in messages) == ["conv_e2e_sensor", "conv_e2e_wait"]
    assert {m["status"] for m in messages} == {"delivered"}
    assert [r["status"] for r in vantax_emulator.requests() if r["method"] == "POST"] == [201, 201]
    assert {m["body"]["content"] for m in messages} == {f"e2e wait {run_id}", f"e2e sensor {run_id}"}
