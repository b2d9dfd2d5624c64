from __future__ import annotations

from typing import Any

import pytest
from vantax_dagtest import load_dag, task_states, xcom

from vantax_provider._compat import AirflowFailException, AirflowSensorTimeout
from vantax_provider.exceptions import VantaxAuthenticationError
from vantax_provider.hooks.vantax import VantaxHook
from vantax_provider.sensors.vantax import VantaxMessageStatusSensor


def sent(conversation_id: str) -> str:
    hook = VantaxHook()
    try:
        return hook.send_message(conversation_id, channel="facebook", content="x").id
    finally:
        hook.close()


def sensor(conversation_id: str, message_id: str, **kwargs: Any) -> VantaxMessageStatusSensor:
    return VantaxMessageStatusSensor(
        task_id="wait", conversation_id=conversation_id, message_id=message_id, **kwargs
    )


def test_poke_is_false_while_in_progress_then_true(vantax_conn: str) -> None:
    message_id = sent("conv_s")
    s = sensor("conv_s", message_id)
    assert s.poke({}) is False  # type: ignore[arg-type]
    import time

    time.sleep(0.25)
    done = s.poke({})  # type: ignore[arg-type]
    assert done and done.xcom_value == {"id": message_id, "conversation_id": "conv_s", "status": "delivered"}  # type: ignore[union-attr]


def test_transient_errors_do_not_fail_a_poke(vantax_emulator: Any, conn_extra: Any) -> None:
    conn_extra(max_retries=0)
    message_id = sent("conv_s")
    for status in (503, 500, 429):
        vantax_emulator.inject("status", status=status, method="GET", times=1)
        assert sensor("conv_s", message_id).poke({}) is False  # type: ignore[arg-type]
    vantax_emulator.inject("drop", method="GET", times=1)
    assert sensor("conv_s", message_id).poke({}) is False  # type: ignore[arg-type]


def test_auth_and_not_found_errors_fail(vantax_emulator: Any, conn_extra: Any) -> None:
    conn_extra(max_retries=0)
    message_id = sent("conv_s")
    vantax_emulator.inject("status", status=401, method="GET", times=1)
    with pytest.raises(VantaxAuthenticationError):
        sensor("conv_s", message_id).poke({})  # type: ignore[arg-type]
    with pytest.raises(Exception, match="404"):
        sensor("conv_s", "msg_nope").poke({})  # type: ignore[arg-type]


def test_unknown_status_fails_closed_naming_it_unless_listed(vantax_conn: str, vantax_emulator: Any) -> None:
    vantax_emulator.configure(outcomes={"conv_odd": "read"}, queued_seconds=0, sent_seconds=0)
    message_id = sent("conv_odd")
    with pytest.raises(AirflowFailException, match="'read'"):
        sensor("conv_odd", message_id).poke({})  # type: ignore[arg-type]
    assert sensor("conv_odd", message_id, success_statuses=["read"]).poke({})  # type: ignore[arg-type]
    with pytest.raises(AirflowFailException, match="not delivered: status 'read'"):
        sensor("conv_odd", message_id, failure_statuses=["read"]).poke({})  # type: ignore[arg-type]


def test_execute_complete_maps_events() -> None:
    s = sensor("c", "m")
    with pytest.raises(AirflowSensorTimeout, match="Timed out"):
        s.execute_complete({}, {"status": "timeout", "message": "Timed out", "message_id": "m"})  # type: ignore[arg-type]
    with pytest.raises(AirflowFailException, match="failed"):
        s.execute_complete({}, {"status": "failure", "message": "failed", "message_id": "m"})  # type: ignore[arg-type]
    ok = {
        "status": "success",
        "message": "",
        "message_id": "m",
        "conversation_id": "c",
        "delivery_status": "delivered",
    }
    assert s.execute_complete({}, ok) == {"id": "m", "conversation_id": "c", "status": "delivered"}  # type: ignore[arg-type]


SENSOR_DAG = """
from datetime import datetime
from airflow.sdk import DAG
from vantax_provider.operators.vantax import VantaxSendMessageOperator
from vantax_provider.sensors.vantax import VantaxMessageStatusSensor

with DAG("{dag_id}", schedule=None, start_date=datetime(2025, 1, 1), params={{"conv": ""}}) as dag:
    send = VantaxSendMessageOperator(
        task_id="send", conversation_id="{{{{ params.conv }}}}", channel="facebook", content="hello"
    )
    send >> VantaxMessageStatusSensor(
        task_id="wait", conversation_id="{{{{ params.conv }}}}",
        message_id="{{{{ ti.xcom_pull(task_ids='send', key='message_id') }}}}",
        mode="{mode}", deferrable={deferrable}, poke_interval=0.1, timeout=6, retries=0,
    )
"""


@pytest.mark.parametrize("mode", ["poke", "reschedule", "deferrable"])
@pytest.mark.parametrize(
    ("conv", "state"),
    [("conv_sd", "success"), ("conv_fail_sd", "failed"), ("conv_stuck_sd", "failed")],
    ids=["delivered", "failed", "timeout"],
)
def test_sensor_modes(dag_env: Any, mode: str, conv: str, state: str) -> None:
    # The delays count from the sensor's first read, so every mode has to wait however late
    # dag.test() starts it (on a busy machine, Airflow 3.1 took 5 s between two tasks).
    dag_env.configure(queued_seconds=1, sent_seconds=0.5, delays_from="first_read")
    dag_id = f"sensor_{mode}_{conv}"
    dag = load_dag(dag_id, SENSOR_DAG.format(
        dag_id=dag_id, mode="poke" if mode == "deferrable" else mode, deferrable=mode == "deferrable"
    ))  # fmt: skip
    dr = dag.test(run_conf={"conv": conv})
    assert task_states(dr) == {"send": ("success", 1), "wait": (state, 1)}
    [message] = dag_env.messages()
    gets = [r for r in dag_env.requests() if r["method"] == "GET"]
    assert len(gets) >= 2  # the first read sees "queued": it had to poll again
    assert {r["message_id"] for r in gets} == {message["id"]}
    if state == "success":
        assert xcom(dr, "wait") == {"id": message["id"], "conversation_id": conv, "status": "delivered"}
