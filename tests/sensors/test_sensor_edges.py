"""
soft_fail / never_fail in every sensor mode, and the sensor's edge cases (issue 15, items 3 and 7).
"""

from __future__ import annotations

from typing import Any

import pytest
from vantax_dagtest import load_dag, task_states

from vantax_provider._compat import AirflowFailException
from vantax_provider.exceptions import VantaxValidationError
from vantax_provider.sensors.vantax import VantaxMessageStatusSensor

EDGES_DAG = """
from datetime import datetime
from airflow.sdk import DAG
from vantax_provider.operators.vantax import VantaxSendMessageOperator
from vantax_provider.sensors.vantax import VantaxMessageStatusSensor as Sensor

with DAG("sensor_edges", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
    send = VantaxSendMessageOperator(task_id="send", conversation_id="conv_fail_edges", channel="facebook",
                                     content="hello")
    failed_id = "{{ ti.xcom_pull(task_ids='send', key='message_id') }}"
    common = dict(poke_interval=0.1, timeout=5, retries=2, retry_delay=0)
    for mode in ("poke", "reschedule", "deferrable"):
        deferrable = mode == "deferrable"
        kwargs = dict(mode="poke" if deferrable else mode, deferrable=deferrable)
        send >> Sensor(task_id=f"soft_fail_{mode}", conversation_id="conv_fail_edges", message_id=failed_id,
                       soft_fail=True, **kwargs, **common)
        send >> Sensor(task_id=f"fails_{mode}", conversation_id="conv_fail_edges", message_id=failed_id,
                       **kwargs, **common)
        Sensor(task_id=f"never_fail_{mode}", conversation_id="conv_fail_edges", message_id="",
               never_fail=True, **kwargs, **common)
        Sensor(task_id=f"not_found_{mode}", conversation_id="conv_fail_edges", message_id="msg_nope",
               **kwargs, **common)
"""


def test_soft_fail_never_fail_and_404_in_every_mode(dag_env: Any) -> None:
    # The message has already failed when the sensors first look: the deferrable mode decides on
    # its first check, in the worker, like the others.
    dag_env.configure(queued_seconds=0, sent_seconds=0)
    dag = load_dag("sensor_edges", EDGES_DAG)
    dr = dag.test()
    states = task_states(dr)
    assert states.pop("send") == ("success", 1)
    expected = {}
    for mode in ("poke", "reschedule", "deferrable"):
        expected[f"soft_fail_{mode}"] = ("skipped", 1)
        expected[f"never_fail_{mode}"] = ("skipped", 1)
        expected[f"fails_{mode}"] = ("failed", 1)  # a failed message is final: no retries
        expected[f"not_found_{mode}"] = ("failed", 1)  # a 404 fails at once, not retried
    assert states == expected
    not_found = [r for r in dag_env.requests() if r.get("message_id") == "msg_nope"]
    assert [r["status"] for r in not_found] == [404] * 3  # one GET per mode
    assert not [r for r in dag_env.requests() if r.get("message_id") == ""]


def test_a_none_message_id_is_a_validation_error_before_any_request(
    vantax_conn: str, vantax_emulator: Any
) -> None:
    sensor = VantaxMessageStatusSensor(task_id="w", conversation_id="conv", message_id=None)  # type: ignore[arg-type]
    with pytest.raises(AirflowFailException, match="message_id: must be a string, got NoneType") as raised:
        sensor.poke({})  # type: ignore[arg-type]
    assert isinstance(raised.value.__cause__, VantaxValidationError)
    assert vantax_emulator.requests() == []


def test_an_id_that_is_not_text_is_named_not_quoted(vantax_conn: str, vantax_emulator: Any) -> None:
    # E.g. a whole message pulled from XCom as a native object: its content must not reach the error.
    message = {"content": "PIN 918273"}
    sensor = VantaxMessageStatusSensor(task_id="w", conversation_id="conv", message_id=message)  # type: ignore[arg-type]
    with pytest.raises(AirflowFailException, match="message_id: must be a string, got dict") as raised:
        sensor.poke({})  # type: ignore[arg-type]
    assert "918273" not in str(raised.value) and vantax_emulator.requests() == []


@pytest.mark.parametrize("poke_interval", [0, 0.0])
def test_deferrable_needs_a_positive_poke_interval(poke_interval: float) -> None:
    with pytest.raises(ValueError, match="poke_interval must be positive with deferrable=True"):
        VantaxMessageStatusSensor(
            task_id="w", conversation_id="c", message_id="m", deferrable=True, poke_interval=poke_interval
        )
    VantaxMessageStatusSensor(
        task_id="w", conversation_id="c", message_id="m", deferrable=False, poke_interval=0
    )
