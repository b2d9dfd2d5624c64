"""
Values that arrive from an XCom are data, never templates, in every mapping form.

One DAG maps the send operator in each form.  Every form sends two customer texts holding Jinja
syntax (which must arrive verbatim) and, where the form allows it, a text of the DAG author's own
whose ``{{ ds }}`` must render.  The emulator records what was really sent.
"""

from __future__ import annotations

import json
from typing import Any

from vantax_dagtest import load_dag, rendered_fields, task_states

CUSTOMER = "Hi {{ customer_name }}, key {{ conn.vantax_default.password }} is {{ 7 * 6 }}"
LITERAL = "LX1 {{ ds }} literal"

DAG_SOURCE = """
from datetime import datetime
from airflow.sdk import DAG, task
from vantax_provider.operators.vantax import VantaxSendMessageOperator as Send

CUSTOMER = "Hi {{ customer_name }}, key {{ conn.vantax_default.password }} is {{ 7 * 6 }}"
LITERAL = "LX1 {{ ds }} literal"

with DAG("tpl_mapping_forms", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
    @task
    def texts():
        return [CUSTOMER, LITERAL]

    @task
    def text_a():
        return CUSTOMER

    @task
    def text_b():
        return LITERAL

    @task
    def rows(form):
        return [{"conversation_id": form + "_a", "content": CUSTOMER},
                {"conversation_id": form + "_b", "content": LITERAL}]

    @task
    def row_a():
        return {"conversation_id": "kwargs_list_a", "content": CUSTOMER}

    @task
    def row_b():
        return {"conversation_id": "kwargs_list_b", "content": LITERAL}

    @task
    def media():
        return ["https://example.com/{{ds}}.png"]

    # expand(): an XCom list next to a literal list of the author's templates.
    Send.partial(task_id="expand", channel="facebook", conversation_id="expand").expand(content=texts())
    Send.partial(task_id="expand_t", channel="facebook").expand(
        conversation_id=["expand_t"], content=["Day {{ ds }}"]
    )
    # expand_kwargs(XComArg)
    Send.partial(task_id="kwargs_xcom", channel="facebook", media_url=["https://example.com/{{ds}}.gif"]
                 ).expand_kwargs(rows("kwargs_xcom"))
    # expand_kwargs([XComArg, XComArg]): a literal list whose items come from XComs.
    Send.partial(task_id="kwargs_list", channel="facebook").expand_kwargs(
        [row_a(), row_b()]
    )
    # expand_kwargs([dict, ...]): literal dicts, values from XComs or the author's templates.
    Send.partial(task_id="kwargs_dicts", channel="facebook").expand_kwargs([
        {"conversation_id": "kwargs_dicts_a", "content": text_a()},
        {"conversation_id": "kwargs_dicts_b", "content": text_b(), "media_url": media()},
        {"conversation_id": "kwargs_dicts_t", "content": "Day {{ ds }}"},
    ])
    # .map(): transformed XComs, in expand_kwargs and in expand.
    Send.partial(task_id="map_kwargs", channel="facebook").expand_kwargs(
        texts().map(lambda t: {"conversation_id": "map_kwargs_" + ("a" if "customer" in t else "b"),
                               "content": t})
    )
    Send.partial(task_id="map_expand", channel="facebook", conversation_id="map_expand").expand(
        content=texts().map(lambda t: t.strip())
    )
    # XComArgs in partial(), with expand() and expand_kwargs().
    Send.partial(task_id="partial", channel="facebook", content=text_a(), media_url=media()).expand(
        conversation_id=["partial_a"]
    )
    Send.partial(task_id="partial_kwargs", channel="facebook", content=text_b()).expand_kwargs(
        [{"conversation_id": "partial_kwargs_b"}]
    )
    Send.partial(task_id="partial_t", channel="facebook", conversation_id="partial_t").expand(
        content=["Day {{ ds }}"]
    )
    # A plain operator given an XComArg.
    Send(task_id="plain", channel="facebook", conversation_id="plain_a", content=text_a())
"""

FORMS = ("kwargs_xcom", "kwargs_list", "kwargs_dicts", "map_kwargs", "partial")


def test_xcom_values_are_sent_verbatim_in_every_mapping_form(dag_env: Any) -> None:
    dag = load_dag("tpl_mapping_forms", DAG_SOURCE)
    dr = dag.test()
    states = task_states(dr)
    failed = {task: state for task, (state, _) in states.items() if state != "success"}
    assert not failed, repr(failed)
    ds = dr.logical_date.strftime("%Y-%m-%d")
    sent: dict[str, list[dict[str, Any]]] = {}
    for message in dag_env.messages():
        sent.setdefault(message["conversation_id"], []).append(message["body"])
    got = {conv: sorted(body["content"] for body in bodies) for conv, bodies in sent.items()}
    expected = {"expand": sorted([CUSTOMER, LITERAL]), "map_expand": sorted([CUSTOMER, LITERAL])}
    for form in FORMS:
        expected[f"{form}_a"] = [CUSTOMER]
        expected[f"{form}_b"] = [LITERAL]
    expected["partial_a"] = [CUSTOMER]
    del expected["partial_b"]
    expected["partial_kwargs_b"] = [LITERAL]
    expected["plain_a"] = [CUSTOMER]
    for form in ("expand_t", "kwargs_dicts_t", "partial_t"):
        expected[form] = [f"Day {ds}"]
    assert got == expected
    # A list from an XCom (media_url) is data too, in a literal dict and in partial().
    assert sent["kwargs_dicts_b"][0]["media_url"] == ["https://example.com/{{ds}}.png"]
    assert sent["partial_a"][0]["media_url"] == ["https://example.com/{{ds}}.png"]
    # ...while the author's own template in partial() renders, next to a dict from an XCom.
    assert sent["kwargs_xcom_a"][0]["media_url"] == [f"https://example.com/{ds}.gif"]
    # Neither the requests nor the rendered fields Airflow keeps for the UI hold the API key.
    assert dag_env.api_key not in json.dumps(dag_env.messages())
    rendered = rendered_fields("tpl_mapping_forms")
    assert rendered and dag_env.api_key not in json.dumps(rendered, default=str)
