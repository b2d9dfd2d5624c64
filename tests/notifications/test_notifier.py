from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from vantax_dagtest import load_dag, task_states

from vantax_provider.notifications.vantax import VantaxNotifier, send_vantax_notification


def test_alias_is_the_class() -> None:
    assert send_vantax_notification is VantaxNotifier


def test_notifier_on_a_failing_task(dag_env: Any) -> None:
    dag = load_dag(
        "nt_fail",
        """
from datetime import datetime
from airflow.sdk import DAG, task
from vantax_provider.notifications.vantax import VantaxNotifier

with DAG("nt_fail", schedule=None, start_date=datetime(2025, 1, 1), params={"to": "conv_oncall"}) as dag:
    @task(on_failure_callback=VantaxNotifier(
        conversation_id="{{ params.to }}", channel="facebook",
        content="{{ dag.dag_id }} failed: {{ ti.task_id }} try {{ ti.try_number }}",
    ))
    def boom():
        raise RuntimeError("no")

    @task(on_failure_callback=VantaxNotifier(conversation_id="conv_never", channel="facebook", content="x"))
    def fine():
        return 1

    boom()
    fine()
""",
    )
    dr = dag.test()
    assert task_states(dr) == {"boom": ("failed", 1), "fine": ("success", 1)}
    [message] = dag_env.messages()
    assert message["conversation_id"] == "conv_oncall"
    assert message["body"] == {"channel": "facebook", "content": "nt_fail failed: boom try 1"}
    assert message["idempotency_key"].startswith("airflow-")


def _context(try_number: int = 1) -> dict[str, Any]:
    ti = SimpleNamespace(dag_id="d", task_id="t", run_id="r1", map_index=-1, try_number=try_number)
    from airflow.sdk import DAG

    return {"ti": ti, "dag": DAG("d", schedule=None), "ds": "2025-01-02"}


def test_sync_notify_renders_and_deduplicates_a_repeated_callback(
    vantax_conn: str, vantax_emulator: Any
) -> None:
    for _ in range(2):
        VantaxNotifier(conversation_id="conv_n", channel="facebook", content="done {{ ds }}")(_context())
    VantaxNotifier(conversation_id="conv_n", channel="facebook", content="done {{ ds }}")(
        _context(try_number=2)
    )
    assert [m["body"]["content"] for m in vantax_emulator.messages()] == [
        "done 2025-01-02",
        "done 2025-01-02",
    ]
    assert vantax_emulator.stats()["replayed"] == 1  # the same try's callback twice: sent once


def test_async_notify(vantax_conn: str, vantax_emulator: Any) -> None:
    notifier = VantaxNotifier(
        conversation_id="conv_{{ ds_nodash }}",
        channel="email",
        subject="Report",
        content="{{ ds }} done",
        context=_context() | {"ds_nodash": "20250102"},
    )

    async def run() -> None:
        await notifier

    asyncio.run(run())
    [message] = vantax_emulator.messages()
    assert message["conversation_id"] == "conv_20250102"
    assert message["body"] == {"channel": "email", "subject": "Report", "content": "2025-01-02 done"}


def test_opting_out_of_the_key(vantax_conn: str, vantax_emulator: Any) -> None:
    VantaxNotifier(conversation_id="c", channel="facebook", content="x", idempotency_key="")(_context())
    assert vantax_emulator.messages()[0]["idempotency_key"] is None


def test_a_template_syntax_error_names_the_field_and_sends_nothing(
    vantax_conn: str, vantax_emulator: Any
) -> None:
    import pytest

    from vantax_provider.exceptions import VantaxValidationError

    notifier = VantaxNotifier(conversation_id="c", channel="facebook", content="Hi {{ ds ")
    with pytest.raises(VantaxValidationError, match=r"content: is not a valid template: .*\(line 1\)"):
        notifier(_context())
    assert vantax_emulator.stats()["requests"] == 0
