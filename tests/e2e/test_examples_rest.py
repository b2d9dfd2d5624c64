"""
Every example DAG on a real deployment, each run triggered through the REST API with ``logical_date`` null.

That is how the UI's Trigger button and API clients start a run on Airflow 3: the run has no
logical date, so ``{{ ds }}`` and the other date variables are not in the template context
(``airflow dags test`` and ``dag.test()`` do set one, and hide it).  One deployment (api-server,
scheduler, dag-processor, triggerer) serves every example; the scheduler makes no runs of its
own (``use_job_schedule`` off), so what the emulator received comes from the run under test.

The deadline alert's example runs with its interval cut to seconds: the scheduler sees the
missed deadline, the triggerer runs ``VantaxNotifier`` and the emulator gets the text once,
while the API key appears in no log of any component, task or trigger.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow_cluster import AirflowCluster

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
DEADLINE_SECONDS = 4


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, vantax_emulator_server: Any
) -> Iterator[AirflowCluster]:
    root = tmp_path_factory.mktemp("examples")
    dags = root / "dags"
    shutil.copytree(REPO / "example_dags", dags, ignore=shutil.ignore_patterns("__pycache__"))
    deadline_dag = dags / "example_vantax_deadline_alert.py"
    source, count = re.subn(
        r"^LATE_AFTER = .*$",
        f"LATE_AFTER = timedelta(seconds={DEADLINE_SECONDS})",
        deadline_dag.read_text(),
        flags=re.MULTILINE,
    )
    assert count == 1, "the deadline example no longer sets LATE_AFTER on a line of its own"
    deadline_dag.write_text(source)
    env = {
        **vantax_emulator_server.airflow_env(),
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
    }
    with AirflowCluster(root / "home", dags, env=env, parallelism=4) as running:
        yield running


def _run(cluster: AirflowCluster, dag_id: str, conf: dict[str, Any] | None = None) -> tuple[str, str]:
    cluster.wait_for_dag(dag_id)
    run_id = cluster.trigger_rest(dag_id, conf=conf)
    [(logical_date,)] = cluster.query(
        "SELECT logical_date FROM dag_run WHERE dag_id = ? AND run_id = ?", dag_id, run_id
    )
    assert logical_date is None, "the REST run got a logical date: the test would not show the bug"
    return run_id, cluster.wait_for_run(dag_id, run_id, timeout=240)


def _task_logs(cluster: AirflowCluster, dag_id: str, run_id: str) -> str:
    folder = cluster.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
    return "\n".join(p.read_text(errors="replace") for p in sorted(folder.rglob("*.log")))


def _log_lines(cluster: AirflowCluster, *words: str) -> list[str]:
    """Every line of every log (components, tasks, triggers) holding all of ``words``."""
    found = []
    for path in sorted((cluster.home / "logs").rglob("*.log")):
        lines = path.read_text(errors="replace").splitlines()
        found += [line[:500] for line in lines if all(word in line for word in words)]
    return found


def _assert_success(cluster: AirflowCluster, dag_id: str, run_id: str, state: str) -> None:
    logs = _task_logs(cluster, dag_id, run_id).splitlines()
    errors = [line[:500] for line in logs if "error" in line.lower() or "undefined" in line]
    assert state == "success", (cluster.task_instances(dag_id, run_id), errors)


@pytest.mark.timeout(600)
def test_scheduled_notification(cluster: AirflowCluster, vantax_emulator: Any) -> None:
    dag_id = "example_vantax_scheduled_notification"
    run_id, state = _run(cluster, dag_id)
    _assert_success(cluster, dag_id, run_id, state)
    [message] = vantax_emulator.messages()
    assert message["status"] == "delivered"
    assert run_id in message["body"]["content"]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("fail", [False, True], ids=["success", "failure"])
def test_pipeline_alert(cluster: AirflowCluster, vantax_emulator: Any, fail: bool) -> None:
    dag_id = "example_vantax_pipeline_alert"
    run_id, state = _run(cluster, dag_id, conf={"fail": fail})
    assert state == ("failed" if fail else "success"), cluster.task_instances(dag_id, run_id)
    # The DAG-level success callback runs in the dag-processor after the run ends: give it time.
    deadline = time.monotonic() + 60
    while not vantax_emulator.messages() and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(2)  # and any second alert, time to show up
    [message] = vantax_emulator.messages()
    content = message["body"]["content"]
    assert run_id in content, content
    if fail:
        assert content.startswith(f"{dag_id} failed: task load (try 1)"), content
    else:
        assert content.startswith(f"{dag_id} finished: all tasks succeeded"), content


@pytest.mark.timeout(600)
def test_outreach(cluster: AirflowCluster, vantax_emulator: Any) -> None:
    dag_id = "example_vantax_outreach"
    run_id, state = _run(cluster, dag_id)
    _assert_success(cluster, dag_id, run_id, state)
    messages = vantax_emulator.messages()
    assert len(messages) == 4 and {m["status"] for m in messages} == {"delivered"}


@pytest.mark.timeout(600)
def test_bulk_mapped_chunks(cluster: AirflowCluster, vantax_emulator: Any) -> None:
    dag_id = "example_vantax_bulk_mapped_chunks"
    run_id, state = _run(cluster, dag_id)
    _assert_success(cluster, dag_id, run_id, state)
    assert len(vantax_emulator.messages()) == 30
    assert "Outreach over 3 chunks" in _task_logs(cluster, dag_id, run_id)
    # The task SDK's client logs a read that finds nothing in the worker's own log.
    assert _log_lines(cluster, "XCom not found", run_id) == []


@pytest.mark.timeout(600)
def test_deadline_alert_is_sent_once_by_the_triggerer(cluster: AirflowCluster, vantax_emulator: Any) -> None:
    dag_id = "example_vantax_deadline_alert"
    work = DEADLINE_SECONDS + 20  # the run outlives its deadline by far
    run_id, state = _run(cluster, dag_id, conf={"work_seconds": work})
    _assert_success(cluster, dag_id, run_id, state)
    time.sleep(3)  # a second alert (a repeated callback) would show up by now
    messages = vantax_emulator.messages()
    assert len(messages) == 1, messages
    [message] = messages
    assert message["body"]["content"].startswith(f"{dag_id} is late: run {run_id} is not done by ")
    assert message["body"]["channel"] == "sms" and message["body"]["from_phone_number_id"] == "pn_alerts"
    # Run by the triggerer (3.1: DeadlineCallbackState, later CallbackState), once.
    fired = _log_lines(cluster, "Trigger fired event", "CallbackState.SUCCESS")
    assert len(fired) == 1, fired
    key = vantax_emulator.api_key
    files = [path for path in (cluster.home / "logs").rglob("*") if path.is_file()]
    leaks = [path for path in files if key in path.read_text(errors="replace")]
    assert leaks == []
