"""The operator inside real DAG runs (``dag.test()``), counted at the emulator."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from vantax_dagtest import load_dag, task_states, xcom

from vantax_provider.operators._state import single_send_key

HEADER = """
from datetime import datetime
from airflow.sdk import DAG, task
from vantax_provider.operators.vantax import VantaxSendMessageOperator
"""


def posts(emulator: Any) -> list[dict[str, Any]]:
    return [r for r in emulator.requests() if r["method"] == "POST"]


def test_templating_from_the_context_and_xcom_outputs(dag_env: Any) -> None:
    dag = load_dag(
        "op_context",
        HEADER
        + """
with DAG("op_context", schedule=None, start_date=datetime(2025, 1, 1), params={"conv": "conv_ctx"}) as dag:
    VantaxSendMessageOperator(
        task_id="send", conversation_id="{{ params.conv }}", channel="facebook",
        content="Report {{ ds }} of {{ dag.dag_id }}", media_url=["https://example.com/{{ ds_nodash }}.png"],
    )
""",
    )
    dr = dag.test()
    assert task_states(dr) == {"send": ("success", 1)}
    [message] = dag_env.messages()
    ds = dr.logical_date.strftime("%Y-%m-%d")
    assert message["conversation_id"] == "conv_ctx"
    assert message["body"]["content"] == f"Report {ds} of op_context"
    assert message["body"]["media_url"] == [f"https://example.com/{ds.replace('-', '')}.png"]
    ti = SimpleNamespace(dag_id="op_context", task_id="send", run_id=dr.run_id, map_index=-1, max_tries=0)
    assert message["idempotency_key"] == single_send_key(None, {"ti": ti}, "conv_ctx")
    returned = xcom(dr, "send")
    assert returned["id"] == message["id"] == xcom(dr, "send", "message_id")
    assert returned["conversation_id"] == "conv_ctx" and returned["status"] in ("queued", "sent")


def test_templating_from_template_files(dag_env: Any) -> None:
    files = {
        "op_files_tpl/plain.j2": "Hello {{ params.name }}, run {{ run_id }}",
        "op_files_tpl/body.html": "<p>Hi <b>{{ params.name }}</b></p>",
    }
    dag = load_dag(
        "op_files",
        HEADER
        + """
with DAG("op_files", schedule=None, start_date=datetime(2025, 1, 1), params={"name": "Ada"}) as dag:
    VantaxSendMessageOperator(
        task_id="send", conversation_id="conv_email", channel="email", subject="For {{ params.name }}",
        content="op_files_tpl/plain.j2", html="op_files_tpl/body.html",
    )
""",
        files,
    )
    dr = dag.test()
    assert task_states(dr) == {"send": ("success", 1)}
    [message] = dag_env.messages()
    assert message["body"] == {
        "channel": "email", "content": f"Hello Ada, run {dr.run_id}", "subject": "For Ada",
        "html": "<p>Hi <b>Ada</b></p>",
    }  # fmt: skip


def test_values_from_params_and_xcom_are_sent_literally(dag_env: Any) -> None:
    dag = load_dag(
        "op_literal",
        HEADER
        + """
with DAG("op_literal", schedule=None, start_date=datetime(2025, 1, 1),
         params={"name": "{{ 7 * 7 }} {% raw %}x{% endraw %}"}) as dag:
    @task
    def personalise():
        return "Dear {{ conn.vantax_default.password }}, {{ 6 * 7 }}"

    VantaxSendMessageOperator(task_id="from_param", conversation_id="conv_p", channel="facebook",
                              content="Hi {{ params.name }}")
    VantaxSendMessageOperator(task_id="from_xcom", conversation_id="conv_x", channel="facebook",
                              content=personalise())
""",
    )
    dr = dag.test()
    assert task_states(dr) == {
        "personalise": ("success", 1),
        "from_param": ("success", 1),
        "from_xcom": ("success", 1),
    }
    sent = {m["conversation_id"]: m["body"]["content"] for m in dag_env.messages()}
    assert sent == {
        "conv_p": "Hi {{ 7 * 7 }} {% raw %}x{% endraw %}",
        "conv_x": "Dear {{ conn.vantax_default.password }}, {{ 6 * 7 }}",
    }


def test_validation_failure_is_not_retried(dag_env: Any) -> None:
    dag = load_dag(
        "op_invalid",
        HEADER
        + """
with DAG("op_invalid", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
    VantaxSendMessageOperator(task_id="send", conversation_id="conv_v", channel="sms", content="{{ '' }}",
                              retries=3, retry_delay=0)
""",
    )
    dr = dag.test()
    assert task_states(dr) == {"send": ("failed", 1)}
    assert dag_env.stats()["requests"] == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [("content", "Hi {{ params.name "), ("subject", "{% if %}"), ("media_url", ["https://x.io/{{ ds "])],
)
def test_a_template_syntax_error_is_not_retried(dag_env: Any, field: str, value: Any) -> None:
    fields = {"content": "Hi", "subject": "S", field: value}
    dag_id = f"op_syntax_{field}"
    dag = load_dag(
        dag_id,
        HEADER
        + f"""
with DAG("{dag_id}", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
    VantaxSendMessageOperator(task_id="send", conversation_id="conv_s", channel="email", retries=3,
                              retry_delay=0, **{fields!r})
""",
    )
    dr = dag.test()
    assert task_states(dr) == {"send": ("failed", 1)}
    assert dag_env.stats()["requests"] == 0


def test_messaging_window_422_is_not_retried(dag_env: Any) -> None:
    dag = load_dag(
        "op_422",
        HEADER
        + """
with DAG("op_422", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
    VantaxSendMessageOperator(task_id="send", conversation_id="conv_closed_9", channel="whatsapp",
                              from_phone_number_id="pn_1", content="hi", retries=3, retry_delay=0)
""",
    )
    dr = dag.test()
    assert task_states(dr) == {"send": ("failed", 1)}
    assert [r["status"] for r in posts(dag_env)] == [422]


@pytest.mark.airflow_3_3
def test_a_retried_task_instance_does_not_send_again(dag_env: Any) -> None:
    """Airflow 3.3: the first try sends, then fails while waiting; the retry only waits."""
    dag = load_dag(
        "op_retry",
        HEADER
        + """
with DAG("op_retry", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
    VantaxSendMessageOperator(task_id="send", conversation_id="conv_r", channel="facebook", content="once",
                              wait_for_delivery=True, poll_interval=0.05, retries=2, retry_delay=0)
""",
    )
    dag_env.inject("status", status=401, method="GET", times=1)  # not retried by the hook: the try fails
    dr = dag.test()
    assert task_states(dr) == {"send": ("success", 2)}
    assert [r["status"] for r in posts(dag_env)] == [201]
    assert dag_env.stats()["created"] == 1
    returned = xcom(dr, "send")
    assert returned["status"] == "delivered" and returned["id"] == dag_env.messages()[0]["id"]


WAIT_DAG = (
    HEADER
    + """
with DAG("{dag_id}", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
    VantaxSendMessageOperator(task_id="send", conversation_id="{conv}", channel="facebook", content="wait",
                              wait_for_delivery=True, deferrable={deferrable}, poll_interval=0.05,
                              delivery_timeout=3, retries=0)
"""
)


@pytest.mark.parametrize("deferrable", [False, True], ids=["sync", "deferrable"])
@pytest.mark.parametrize(
    ("conv", "state", "final"),
    [
        ("conv_d", "success", "delivered"),
        ("conv_fail_d", "failed", "failed"),
        ("conv_stuck_d", "failed", "sent"),
    ],
    ids=["delivered", "failed", "timeout"],
)
def test_wait_for_delivery(dag_env: Any, deferrable: bool, conv: str, state: str, final: str) -> None:
    # Slow enough that the wait has to poll more than once, also where dag.test() is slow (3.1).
    dag_env.configure(queued_seconds=0.5, sent_seconds=0.5)
    dag_id = f"op_wait_{conv}_{int(deferrable)}"
    dag = load_dag(dag_id, WAIT_DAG.format(dag_id=dag_id, conv=conv, deferrable=deferrable))
    dr = dag.test()
    assert task_states(dr) == {"send": (state, 1)}
    [message] = dag_env.messages()
    assert message["status"] == final
    assert len(posts(dag_env)) == 1
    gets = [r for r in dag_env.requests() if r["method"] == "GET"]
    assert len(gets) >= (2 if final != "delivered" else 1)
    if state == "success":
        assert xcom(dr, "send")["status"] == "delivered"


def test_mapped_sends_get_distinct_keys(dag_env: Any) -> None:
    dag = load_dag(
        "op_mapped",
        HEADER
        + """
with DAG("op_mapped", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
    VantaxSendMessageOperator.partial(task_id="send", channel="facebook").expand_kwargs(
        [{"conversation_id": "conv_m", "content": "same"}, {"conversation_id": "conv_m", "content": "same"}]
    )
""",
    )
    dr = dag.test()
    assert task_states(dr) == {"send[0]": ("success", 1), "send[1]": ("success", 1)}
    keys = {m["idempotency_key"] for m in dag_env.messages()}
    assert len(keys) == 2 and dag_env.stats()["created"] == 2


def test_conversation_link_is_stored(dag_env: Any, conn_extra: Any) -> None:
    conn_extra(dashboard_url="https://dash.example.com/inbox/{conversation_id}")
    dag = load_dag(
        "op_link",
        HEADER
        + """
with DAG("op_link", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
    VantaxSendMessageOperator(task_id="send", conversation_id="conv_l", channel="facebook", content="hi")
""",
    )
    dr = dag.test()
    assert xcom(dr, "send", "_link_VantaxConversationLink") == "https://dash.example.com/inbox/conv_l"


def test_expand_kwargs_from_xcom_is_literal_but_a_literal_list_is_rendered(dag_env: Any) -> None:
    dag = load_dag(
        "op_mapped_xcom",
        HEADER
        + """
with DAG("op_mapped_xcom", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
    @task
    def rows():
        return [{"conversation_id": "conv_a", "content": "Hi {{ 1 + 1 }}"},
                {"conversation_id": "conv_b", "content": "Hi {{ broken"}]

    VantaxSendMessageOperator.partial(task_id="from_xcom", channel="facebook").expand_kwargs(rows())
    VantaxSendMessageOperator.partial(task_id="from_dag", channel="facebook").expand_kwargs(
        [{"conversation_id": "conv_c", "content": "Day {{ ds }}"}]
    )
""",
    )
    dr = dag.test()
    assert set(task_states(dr).values()) == {("success", 1)}
    sent = {m["conversation_id"]: m["body"]["content"] for m in dag_env.messages()}
    ds = dr.logical_date.strftime("%Y-%m-%d")
    assert sent == {"conv_a": "Hi {{ 1 + 1 }}", "conv_b": "Hi {{ broken", "conv_c": f"Day {ds}"}
