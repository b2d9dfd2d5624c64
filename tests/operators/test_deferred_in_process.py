"""
Deferred waits under ``dag.test()`` and ``airflow dags test``, as the docs tell users to try them.

There Airflow runs the trigger in the task's own process (``run_trigger_in_process``): its channel
to the supervisor (``InProcessSupervisorComms``) has only a blocking ``send``, no ``asend``, and
there is no scheduler whose race the settle time guards against.  Each test runs the three
deferred waits (the bulk operator's, whose trigger reads its ids from an XCom, the send
operator's and the sensor's) and observes Airflow's inline trigger run itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from vantax_dagtest import load_dag, task_states, xcom

SETTLE = 60.0
HEADER = """
from datetime import datetime
from airflow.sdk import DAG
from vantax_provider.operators.vantax import VantaxSendMessageOperator
from vantax_provider.operators.vantax_bulk import VantaxBulkSendMessageOperator
from vantax_provider.sensors.vantax import VantaxMessageStatusSensor
WAIT = dict(deferrable=True, poll_interval=0.05, retries=0)
"""

TASKS = {
    # Five recipients, one of whom the emulator fails: the trigger must have read every status.
    "bulk": """
    VantaxBulkSendMessageOperator(
        task_id="bulk",
        recipients=[{{"cid": f"conv_{tag}{{i}}"}} for i in range(4)] + [{{"cid": "conv_fail_{tag}"}}],
        conversation_id="{{{{ recipient.cid }}}}", channel="facebook", content="hi",
        wait_for_delivery=True, delivery_timeout=30, max_failure_ratio=0.5, report_path=None, **WAIT,
    )
""",
    "send": """
    VantaxSendMessageOperator(
        task_id="send", conversation_id="conv_{tag}", channel="facebook", content="hi",
        wait_for_delivery=True, delivery_timeout=30, **WAIT,
    )
""",
    "sensor": """
    send = VantaxSendMessageOperator(
        task_id="send", conversation_id="conv_{tag}", channel="facebook", content="hi"
    )
    send >> VantaxMessageStatusSensor(
        task_id="wait", conversation_id="conv_{tag}", timeout=30,
        message_id="{{{{ ti.xcom_pull(task_ids='send', key='message_id') }}}}",
        deferrable=True, poke_interval=0.05, retries=0,
    )
""",
}
TRIGGER = {"bulk": "VantaxMessagesStatusTrigger", "send": "VantaxMessageStatusTrigger"}
TRIGGER["sensor"] = TRIGGER["send"]
DAG_SOURCE = HEADER + 'with DAG("{dag_id}", schedule=None, start_date=datetime(2025, 1, 1)) as dag:\n'


def _dag(kind: str, tag: str) -> Any:
    dag_id = f"vx_in_process_{kind}_{tag}"
    return load_dag(dag_id, DAG_SOURCE.format(dag_id=dag_id) + TASKS[kind].format(tag=tag))


@pytest.fixture
def inline_triggers(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every trigger ``dag.test()`` runs in line: its class, how long it ran, when it ended, its event."""
    from airflow.sdk.definitions import dag as dag_module

    real = dag_module._run_inline_trigger
    runs: list[dict[str, Any]] = []

    def observed(trigger: Any, task_sdk_ti: Any) -> Any:
        started = time.monotonic()
        event = real(trigger, task_sdk_ti)
        runs.append({
            "trigger": type(trigger).__name__, "seconds": time.monotonic() - started, "ended": time.time(),
            "not_before": trigger.not_before, "event": None if event is None else event.payload,
        })  # fmt: skip
        return event

    monkeypatch.setattr(dag_module, "_run_inline_trigger", observed)
    return runs


@pytest.fixture
def slow_delivery(dag_env: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Delivery after a second from the first read, and the send operator's look in the worker shortened:
    every wait defers."""
    from vantax_provider.operators import vantax

    monkeypatch.setattr(vantax, "IN_WORKER_WAIT_SECONDS", 0.2)
    dag_env.configure(queued_seconds=0.7, sent_seconds=0.3, delays_from="first_read")
    return dag_env


def _check_run(kind: str, tag: str, emu: Any, run: Any, triggers: list[dict[str, Any]]) -> None:
    wait_task = {"bulk": "bulk", "send": "send", "sensor": "wait"}[kind]
    assert task_states(run)[wait_task] == ("success", 1), (task_states(run), triggers)
    [trigger] = triggers  # the task deferred, and dag.test() ran its trigger in line
    assert trigger["trigger"] == TRIGGER[kind]
    messages = {m["id"]: m for m in emu.messages()}
    if kind == "bulk":
        counts = {"success": 4, "failure": 1, "unknown": 0, "error": 0, "pending": 0}
        assert trigger["event"]["counts"] == counts
        [failed] = [i for i, m in messages.items() if m["conversation_id"] == f"conv_fail_{tag}"]
        assert trigger["event"]["statuses"] == {failed: "failed"}
        assert xcom(run, "bulk")["delivery"]["counts"]["success"] == 4
    else:
        [message] = messages.values()
        assert trigger["event"]["status"] == "success" and trigger["event"]["message_id"] == message["id"]
        assert xcom(run, wait_task)["status"] == "delivered"
    # Each message was read at the emulator, and is delivered or failed there.
    assert {r["message_id"] for r in emu.requests() if r["method"] == "GET"} == set(messages)
    assert all(m["status"] in ("delivered", "failed") for m in messages.values())


@pytest.mark.parametrize("kind", ["bulk", "send", "sensor"])
def test_a_deferred_wait_runs_under_dag_test(
    kind: str, slow_delivery: Any, inline_triggers: list[dict[str, Any]]
) -> None:
    run = _dag(kind, "dq").test()
    _check_run(kind, "dq", slow_delivery, run, inline_triggers)


@pytest.mark.real_settle
@pytest.mark.parametrize("kind", ["bulk", "send", "sensor"])
def test_dag_test_does_not_hold_the_event_for_a_scheduler_it_does_not_have(
    kind: str, slow_delivery: Any, inline_triggers: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A settle time far beyond the wait (delivery takes about a second), so a held event shows.
    monkeypatch.setenv("AIRFLOW__VANTAX__DEFERRAL_SETTLE_SECONDS", str(SETTLE))
    run = _dag(kind, "ds").test()
    _check_run(kind, "ds", slow_delivery, run, inline_triggers)
    [trigger] = inline_triggers
    assert trigger["not_before"] is not None  # the operator asked for the hold ...
    assert trigger["ended"] < trigger["not_before"] and trigger["seconds"] < SETTLE / 2  # ... not applied


@pytest.mark.timeout(600)
def test_a_deferred_bulk_wait_runs_under_the_airflow_dags_test_command(
    airflow_db: Path, tmp_path: Path
) -> None:
    """``airflow dags test`` as a user runs it: its own home, no unit-test mode, the default settle time
    (``DEFERRAL_SETTLE_SECONDS``), the connection from the environment."""
    import shutil

    from vantax_provider.emulator.testing import running_emulator

    dag_id = "vx_in_process_cli"
    home = tmp_path / "home"
    (home / "dags").mkdir(parents=True)
    (home / "dags" / f"{dag_id}.py").write_text(
        DAG_SOURCE.format(dag_id=dag_id) + TASKS["bulk"].format(tag="cli")
    )
    shutil.copy(airflow_db, home / "airflow.db")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW__VANTAX__")) and k != "AIRFLOW__CORE__UNIT_TEST_MODE"
    }
    env.update({
        "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
    })  # fmt: skip
    with running_emulator(queued_seconds=0.7, sent_seconds=0.3) as emu:
        emu.configure(delays_from="first_read")
        env.update(emu.airflow_env())
        started = time.monotonic()
        ran = subprocess.run(
            [sys.executable, "-m", "airflow", "dags", "test", dag_id],
            env=env, capture_output=True, text=True, timeout=540,
        )  # fmt: skip
        seconds = time.monotonic() - started
        output = ran.stdout + ran.stderr
        assert ran.returncode == 0 and "state=success" in output, output[-3000:]
        assert "[DAG TEST] running trigger in line" in output, "the task did not defer: nothing was tested"
        assert "Cannot read the Vantax messages" not in output
        messages = emu.messages()
        statuses = sorted(m["status"] for m in messages)
        read = {r["message_id"] for r in emu.requests() if r["method"] == "GET"}
    assert statuses == ["delivered"] * 4 + ["failed"] and read == {m["id"] for m in messages}
    assert "Holding the event" not in output and "Not holding the event: dag.test()" in output
    print(f"airflow dags test with a deferred bulk wait: {seconds:.1f}s")
