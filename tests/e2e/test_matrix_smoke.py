"""
The smoke that runs on every tested Airflow version (``make test-matrix``; docs/compatibility.md).

One DAG run on a real deployment (api-server, scheduler, dag-processor, triggerer): a send that
defers until delivery, a send followed by a deferrable sensor, and a bulk send with a deferred
wait.  Each wait must really go through the triggerer (the task is seen ``deferred``) and resume
to success on its first try, and the emulator must have received each message once.  A second
check reads the installed versions against the provider's declared requirements, and in the
floors environment (``VANTAX_EXPECT_FLOORS=1``, set by the Makefile) that each declared floor is
the version installed; a third, that docs/compatibility.md's table gives each environment's pins.
"""

from __future__ import annotations

import os
import re
import textwrap
from collections import Counter
from importlib.metadata import distribution, version
from pathlib import Path
from typing import Any

import pytest
from airflow_cluster import AirflowCluster
from packaging.requirements import Requirement
from packaging.version import Version

pytestmark = [pytest.mark.matrix]

REPO = Path(__file__).resolve().parents[2]

DAG_ID = "matrix_smoke"
BULK = 3
DAG_SOURCE = """
from datetime import datetime
from airflow.sdk import DAG
from vantax_provider.operators.vantax import VantaxBulkSendMessageOperator, VantaxSendMessageOperator
from vantax_provider.sensors.vantax import VantaxMessageStatusSensor

with DAG("%(dag_id)s", schedule=None, start_date=datetime(2025, 1, 1), catchup=False,
         default_args={"retries": 0}, is_paused_upon_creation=False) as dag:
    VantaxSendMessageOperator(
        task_id="send_and_wait", conversation_id="conv_smoke_wait", channel="facebook",
        content="smoke wait {{ run_id }}", wait_for_delivery=True, deferrable=True, poll_interval=0.5,
        delivery_timeout=120,
    )
    send = VantaxSendMessageOperator(
        task_id="send", conversation_id="conv_smoke_sensor", channel="sms", from_phone_number_id="pn_smoke",
        content="smoke sensor {{ run_id }}",
    )
    send >> VantaxMessageStatusSensor(
        task_id="wait", conversation_id="conv_smoke_sensor",
        message_id="{{ ti.xcom_pull(task_ids='send', key='message_id') }}",
        deferrable=True, poke_interval=0.5, timeout=120,
    )
    VantaxBulkSendMessageOperator(
        task_id="bulk", recipients=[{"n": n} for n in range(%(bulk)d)],
        conversation_id="conv_smoke_bulk_{{ recipient.n }}", channel="facebook",
        content="smoke bulk {{ recipient.n }} {{ run_id }}", wait_for_delivery=True, deferrable=True,
        poll_interval=0.5, delivery_timeout=120,
    )
"""
DEFERRED_TASKS = ("send_and_wait", "wait", "bulk")


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_send_defer_resume_through_the_triggerer(tmp_path: Path, vantax_emulator: Any) -> None:
    # Delivered 8 s after the POST: longer than a deferrable wait first looks in the worker (3 s),
    # so every wait defers.
    vantax_emulator.configure(queued_seconds=2.0, sent_seconds=6.0)
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / f"{DAG_ID}.py").write_text(textwrap.dedent(DAG_SOURCE % {"dag_id": DAG_ID, "bulk": BULK}))
    env = {**vantax_emulator.airflow_env(), "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60"}
    with AirflowCluster(tmp_path / "home", dags, env=env, parallelism=4) as cluster:
        cluster.wait_for_dag(DAG_ID)
        run_id = cluster.trigger(DAG_ID)
        state = cluster.wait_for_run(DAG_ID, run_id, timeout=300)
        tis = {
            ti["task_id"]: (ti["state"], ti["try_number"]) for ti in cluster.task_instances(DAG_ID, run_id)
        }
        seen = {task: cluster.states_seen(DAG_ID, run_id, task) for task in DEFERRED_TASKS}
    if state != "success":  # after the cluster stopped: its logs are dumped once, here
        logs = cluster.dump_logs(tail=400)
        pytest.fail(f"the run ended {state}: {tis}\n" + "\n".join(_errors(logs)) + f"\n{logs}")
    assert tis == {task: ("success", 1) for task in ("send_and_wait", "send", "wait", "bulk")}, tis
    assert all("deferred" in states for states in seen.values()), seen

    messages = vantax_emulator.messages()
    expected = Counter([f"smoke wait {run_id}", f"smoke sensor {run_id}"])
    expected.update(f"smoke bulk {n} {run_id}" for n in range(BULK))
    assert Counter(m["body"]["content"] for m in messages) == expected
    assert {m["status"] for m in messages} == {"delivered"}


def _errors(logs: str) -> list[str]:
    """Each distinct trigger error and task exception in the logs, on a line of its own, first."""
    triggers = re.findall(r"exited with error ([^\"\[\n]{1,300})", logs)
    tasks = re.findall(r'"exc_type":"(\w+)","exc_value":"([^"]{0,300})"', logs)
    return sorted({f"trigger: {t.strip()}" for t in triggers} | {f"task: {t}: {v}" for t, v in tasks})


def _declared(extra: str = "") -> list[Requirement]:
    """The provider's requirements as installed (its metadata), without those of other extras."""
    requires = distribution("airflow-provider-vantax").requires or []
    return [r for r in map(Requirement, requires) if r.marker is None or r.marker.evaluate({"extra": extra})]


def test_installed_versions_meet_the_declared_requirements() -> None:
    declared = _declared()
    assert {r.name for r in declared} >= {"apache-airflow", "httpx", "pydantic", "jinja2", "asgiref"}
    unmet = {r.name: version(r.name) for r in declared if version(r.name) not in r.specifier}
    assert not unmet, f"installed versions outside pyproject.toml's requirements: {unmet}"


@pytest.mark.skipif(os.environ.get("VANTAX_EXPECT_FLOORS") != "1", reason="the floors environment only")
def test_each_declared_floor_is_the_installed_version() -> None:
    floors = {
        r.name: spec.version for r in _declared("emulator") for spec in r.specifier if spec.operator == ">="
    }
    assert {"apache-airflow", "httpx", "pydantic", "jinja2", "asgiref", "uvicorn"} <= set(floors)
    above = {n: (floor, version(n)) for n, floor in floors.items() if Version(version(n)) != Version(floor)}
    assert not above, f"(declared floor, installed) differ: {above}"


def _constraints(env: str) -> Path:
    """``.venv`` is pinned by requirements/constraints.txt, ``.venv-NAME`` by constraints-NAME.txt."""
    return REPO / "requirements" / ("constraints.txt" if env == ".venv" else f"constraints-{env[6:]}.txt")


def test_the_compatibility_table_gives_each_environments_pins() -> None:
    page = (REPO / "docs" / "compatibility.md").read_text()
    # | `env` | Airflow | libraries as of | common-compat | pydantic | ...
    rows = re.findall(r"^\| `(\.venv[\w.-]*)` \| ([^|]+)\|[^|]+\| ([^|]+)\| ([^|]+)\|", page, re.MULTILINE)
    assert {_constraints(env) for env, *_ in rows} == set((REPO / "requirements").glob("constraints*.txt"))
    for env, airflow, compat, pydantic in rows:
        pins = dict(
            re.findall(r"^([a-z0-9][a-z0-9._-]*)==(\S+)$", _constraints(env).read_text(), re.MULTILINE)
        )
        documented = (airflow.split()[0], compat.strip(), pydantic.strip())
        pinned = (pins["apache-airflow"], pins["apache-airflow-providers-common-compat"], pins["pydantic"])
        assert documented == pinned, env
