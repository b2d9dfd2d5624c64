"""
Values that arrive from an XCom are data, never templates, for the bulk operator too, in every
mapping form: Airflow's rendering of ``recipients`` and the operator's per-recipient rendering of
a message field that itself came from an XCom both leave them as they are.

The upstream tasks return contacts whose fields hold Jinja that would leak the API key or do
arithmetic if rendered; the emulator records what was really sent.
"""

from __future__ import annotations

import json
from typing import Any

from vantax_dagtest import load_dag, rendered_fields, task_states

KEY_TEXT = "{{ conn.vantax_default.password }}"
SUM_TEXT = "{{ 7 * 6 }}"
EVIL = f"Key {KEY_TEXT} is {SUM_TEXT}"

DAG_SOURCE = """
from datetime import datetime
from airflow.sdk import DAG, task
from vantax_provider.operators.vantax_bulk import VantaxBulkSendMessageOperator as Bulk

EVIL = "Key {{ conn.vantax_default.password }} is {{ 7 * 6 }}"
# The author's own per-recipient template: it renders, the recipient's data does not.
TPL = "Hi {{ recipient.name }} {{ recipient.note }} on {{ ds }}"
COMMON = {"channel": "facebook", "conversation_id": "{{ recipient.cid }}", "content": TPL,
          "report_path": None}


def contact(cid):
    return {"cid": cid, "name": "{{ conn.vantax_default.password }}", "note": "{{ 7 * 6 }}"}


with DAG("tpl_bulk_mapping_forms", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
    @task
    def batches(form):
        return [{"recipients": [contact(form + "_a")]}, {"recipients": [contact(form + "_b")]}]

    @task
    def batch(form):
        return {"recipients": [contact(form)]}

    @task
    def contacts(form):
        return [contact(form)]

    @task
    def chunks(form):
        return [[contact(form + "_a")], [contact(form + "_b")]]

    @task
    def message_rows():
        return [{"recipients": [{"n": 1}], "conversation_id": "fields_xcom", "content": EVIL,
                 "media_url": ["https://example.com/{{ds}}.png"]}]

    @task
    def evil_text():
        return EVIL

    @task
    def evil_texts():
        return [EVIL]

    # expand_kwargs(XComArg): dicts from an XCom, the author's templates in partial().
    Bulk.partial(task_id="kwargs_xcom", **COMMON).expand_kwargs(batches("kwargs_xcom"))
    # expand_kwargs([dict, ...]): a literal dict holding an XComArg.
    Bulk.partial(task_id="kwargs_dicts", **COMMON).expand_kwargs(
        [{"recipients": contacts("kwargs_dicts_a")}, {"recipients": contacts("kwargs_dicts_b")}]
    )
    # expand_kwargs([XComArg, XComArg]): a literal list whose dicts come from XComs.
    Bulk.partial(task_id="kwargs_list", **COMMON).expand_kwargs(
        [batch("kwargs_list_a"), batch("kwargs_list_b")]
    )
    # expand_kwargs(XComArg.map(...))
    Bulk.partial(task_id="map_kwargs", **COMMON).expand_kwargs(
        contacts("map_kwargs").map(lambda c: {"recipients": [c]})
    )
    # expand(recipients=XComArg), and partial(recipients=XComArg), and a plain operator.
    Bulk.partial(task_id="expand", **COMMON).expand(recipients=chunks("expand"))
    Bulk.partial(task_id="partial", recipients=contacts("partial"), conversation_id="{{ recipient.cid }}",
                 content=TPL, report_path=None).expand(channel=["facebook"])
    Bulk(task_id="plain", recipients=contacts("plain"), **COMMON)

    # Message fields that come from an XCom are sent as they are, not rendered per recipient.
    Bulk.partial(task_id="fields_xcom", channel="facebook", report_path=None).expand_kwargs(message_rows())
    Bulk.partial(task_id="fields_dicts", channel="facebook", report_path=None).expand_kwargs([
        {"recipients": [{"n": 1}], "conversation_id": "fields_dicts", "content": evil_text()},
        {"recipients": [{"cid": "fields_dicts_t"}], "conversation_id": "{{ recipient.cid }}",
         "content": "Day {{ ds }} {{ recipient.cid }}"},
    ])
    Bulk.partial(task_id="fields_expand", channel="facebook", conversation_id="fields_expand",
                 recipients=[{"n": 1}], report_path=None).expand(content=evil_texts())
    Bulk.partial(task_id="fields_map", channel="facebook", report_path=None).expand_kwargs(
        evil_texts().map(lambda t: {"recipients": [{"n": 1}], "conversation_id": "fields_map", "content": t})
    )
    # Message fields are not template fields: Airflow sets no dependency for an XComArg given to
    # partial() or to a plain operator, so these DAGs set it themselves.
    text = evil_text()
    text >> Bulk.partial(task_id="fields_partial", channel="facebook", conversation_id="fields_partial",
                         content=text, report_path=None).expand(recipients=[[{"n": 1}]])
    text >> Bulk(task_id="fields_plain", channel="facebook", conversation_id="fields_plain",
                 recipients=[{"n": 1}], content=text, report_path=None)
"""

CONTACT_FORMS = (
    "kwargs_xcom_a", "kwargs_xcom_b", "kwargs_dicts_a", "kwargs_dicts_b", "kwargs_list_a",
    "kwargs_list_b", "map_kwargs", "expand_a", "expand_b", "partial", "plain",
)  # fmt: skip
FIELD_FORMS = (
    "fields_xcom", "fields_dicts", "fields_expand", "fields_map", "fields_partial", "fields_plain",
)  # fmt: skip


def test_bulk_sends_xcom_values_verbatim_in_every_mapping_form(dag_env: Any) -> None:
    dag = load_dag("tpl_bulk_mapping_forms", DAG_SOURCE)
    dr = dag.test()
    ds = dr.logical_date.strftime("%Y-%m-%d")
    sent: dict[str, list[dict[str, Any]]] = {}
    for message in dag_env.messages():
        sent.setdefault(message["conversation_id"], []).append(message["body"])
    expected = {form: [f"Hi {KEY_TEXT} {SUM_TEXT} on {ds}"] for form in CONTACT_FORMS}
    expected.update({form: [EVIL] for form in FIELD_FORMS})
    expected["fields_dicts_t"] = [f"Day {ds} fields_dicts_t"]  # the author's literal dict renders
    assert {conv: [body["content"] for body in bodies] for conv, bodies in sent.items()} == expected
    states = task_states(dr)
    assert not {task: state for task, (state, _) in states.items() if state != "success"}
    # A list from an XCom is data too.
    assert sent["fields_xcom"][0]["media_url"] == ["https://example.com/{{ds}}.png"]
    assert dag_env.api_key not in json.dumps(dag_env.messages())
    # The rendered fields Airflow keeps for the UI hold the literal text, never the key.
    rendered = rendered_fields("tpl_bulk_mapping_forms")
    assert rendered, "no rendered fields were recorded"
    assert dag_env.api_key not in json.dumps(rendered, default=str)


BAD_SOURCE = """
from datetime import datetime
from airflow.sdk import DAG, task
from vantax_provider.operators.vantax_bulk import VantaxBulkSendMessageOperator as Bulk

COMMON = {"channel": "facebook", "conversation_id": "{{ recipient.cid }}", "content": "Hi",
          "report_path": None, "retries": 2, "retry_delay": 0}

with DAG("tpl_bulk_not_a_list", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
    @task
    def one_contact():
        return {"cid": "not_a_list"}

    @task
    def rows():
        return [{"recipients": {"cid": "not_a_list"}}, {"recipients": "not_a_list"}]

    Bulk.partial(task_id="from_xcom", **COMMON).expand_kwargs(rows())
    contact = one_contact()
    Bulk.partial(task_id="from_dict", **COMMON).expand_kwargs([{"recipients": contact}])
    Bulk(task_id="plain", recipients=contact, **COMMON)
"""


def test_recipients_that_are_not_a_list_fail_without_retries(dag_env: Any) -> None:
    dag = load_dag("tpl_bulk_not_a_list", BAD_SOURCE)
    dr = dag.test()
    assert task_states(dr) == {
        "one_contact": ("success", 1),
        "rows": ("success", 1),
        "from_xcom[0]": ("failed", 1),
        "from_xcom[1]": ("failed", 1),
        "from_dict[0]": ("failed", 1),
        "plain": ("failed", 1),
    }
    assert dag_env.stats()["requests"] == 0
