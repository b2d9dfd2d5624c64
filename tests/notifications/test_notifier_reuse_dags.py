"""
A shared notifier renders each call from its templates; DAG-level callbacks are keyed by the DAG
run and render with the DAG's Jinja environment (issue 15, items 4, 5 and 6).
"""

from __future__ import annotations

from typing import Any

import pytest
from vantax_dagtest import dags_folder, load_dag, task_states

from vantax_provider.notifications.vantax import VantaxNotifier

DAG_SOURCE = """
from datetime import datetime
from airflow.sdk import DAG, task
from vantax_provider.notifications.vantax import VantaxNotifier

ALERT = VantaxNotifier(conversation_id="conv_ops", channel="facebook", content="task {{ ti.task_id }} failed")

with DAG(
    "nt_reuse", schedule=None, start_date=datetime(2025, 1, 1),
    default_args={"on_failure_callback": ALERT},
    template_searchpath=["{searchpath}"],
    user_defined_macros={"team": "payments"},
    on_failure_callback=[
        # The same settings as the tasks' alert: its DAG-level context carries the last task instance.
        VantaxNotifier(conversation_id="conv_ops", channel="facebook",
                       content="task {{ ti.task_id }} failed"),
        # A template file from template_searchpath, with a user-defined macro.
        VantaxNotifier(conversation_id="conv_dag", channel="facebook", content="nt_reuse_alert.j2"),
    ],
) as dag:
    @task
    def boom1():
        raise RuntimeError("one")

    @task
    def boom2():
        raise RuntimeError("two")

    boom1() >> boom2.override(trigger_rule="all_done")()
"""


def test_shared_notifier_and_dag_level_callbacks(dag_env: Any) -> None:
    searchpath = dags_folder() / "nt_reuse_templates"
    files = {"nt_reuse_templates/nt_reuse_alert.j2": "{{ dag.dag_id }} failed ({{ reason }}) for {{ team }}"}
    dag = load_dag("nt_reuse", DAG_SOURCE.replace("{searchpath}", str(searchpath)), files)
    dr = dag.test()
    assert task_states(dr) == {"boom1": ("failed", 1), "boom2": ("failed", 1)}
    posts = [r for r in dag_env.requests() if r["method"] == "POST"]
    by_conv: dict[str, list[str]] = {}
    for message in dag_env.messages():
        by_conv.setdefault(message["conversation_id"], []).append(message["body"]["content"])
    # Each task alerts with its own id (a shared notifier), and the DAG-level alert is its own message,
    # not a replay of boom2's (same text, different key).
    assert sorted(by_conv["conv_ops"]) == ["task boom1 failed", "task boom2 failed", "task boom2 failed"]
    assert by_conv["conv_dag"] == ["nt_reuse failed (task_failure) for payments"]
    assert dag_env.stats()["replayed"] == 0
    assert [p["status"] for p in posts] == [201] * 4


def test_a_notifier_called_twice_renders_each_time(vantax_conn: str, vantax_emulator: Any) -> None:
    from types import SimpleNamespace

    notifier = VantaxNotifier(conversation_id="conv_n", channel="facebook", content="{{ ti.task_id }} failed")
    for task_id in ("a", "b"):
        ti = SimpleNamespace(dag_id="d", task_id=task_id, run_id="r", map_index=-1, try_number=1)
        notifier({"ti": ti, "dag": None})  # type: ignore[arg-type]
    assert [m["body"]["content"] for m in vantax_emulator.messages()] == ["a failed", "b failed"]
    assert notifier.content == "{{ ti.task_id }} failed"


@pytest.mark.parametrize("reason", ["task_failure", "success"])
def test_a_dag_level_context_is_keyed_by_the_run(reason: str) -> None:
    from types import SimpleNamespace

    from vantax_provider.models import SendMessageRequest

    notifier = VantaxNotifier(conversation_id="c", channel="facebook", content="x")
    ti = SimpleNamespace(dag_id="d", task_id="t", run_id="r", map_index=-1, try_number=1)
    run = SimpleNamespace(run_id="r", start_date="2025-01-01")
    request = SendMessageRequest.model_validate(
        {"conversation_id": "c", "channel": "facebook", "content": "x"}
    )
    task_key = notifier._key({"ti": ti, "dag_run": run}, request)
    dag_key = notifier._key({"ti": ti, "dag_run": run, "reason": reason}, request)
    assert task_key and dag_key and task_key != dag_key


def test_the_hook_logs_a_replay_as_a_replay(vantax_conn: str, vantax_emulator: Any, capfd: Any) -> None:
    from vantax_provider.hooks.vantax import VantaxHook

    hook = VantaxHook()
    try:
        for _ in range(2):
            hook.send_message("conv_r", channel="facebook", content="once", idempotency_key="k-replay-1")
    finally:
        hook.close()
    assert vantax_emulator.stats()["replayed"] == 1
    out, err = capfd.readouterr()
    lines = [line for line in (out + err).splitlines() if "Vantax message msg_" in line]
    assert len(lines) == 2 and " created on facebook" in lines[0]
    assert "replayed (already sent under this Idempotency-Key)" in lines[1] and "created" not in lines[1]
