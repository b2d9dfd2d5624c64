"""
The Airflow internals behind ``keep_xcom_values_literal`` and ``values_from_xcom``, on every
supported Airflow: these tests break when a new Airflow maps tasks differently, before customers'
text is rendered by mistake.
"""

from __future__ import annotations

from datetime import datetime
from types import SimpleNamespace
from typing import Any

import pytest

from vantax_provider._compat import AirflowException
from vantax_provider.operators.vantax import VantaxBulkSendMessageOperator as Bulk
from vantax_provider.operators.vantax import VantaxSendMessageOperator as Send
from vantax_provider.templating import keep_xcom_values_literal, values_from_xcom


def _dag() -> Any:
    from airflow.sdk import DAG, task

    with DAG("compat_mapping", schedule=None, start_date=datetime(2025, 1, 1)) as dag:

        @task
        def rows() -> list[dict[str, str]]:
            return []

        @task
        def texts() -> list[str]:
            return []

        @task
        def text() -> str:
            return ""

        Send.partial(task_id="kwargs_xcom", channel="facebook").expand_kwargs(rows())
        Send.partial(task_id="kwargs_list", channel="facebook").expand_kwargs(
            [{"conversation_id": "c", "content": "Day {{ ds }}"}, rows()]  # type: ignore[list-item]
        )
        Send.partial(task_id="expand", channel="facebook", conversation_id="c").expand(content=texts())
        Send.partial(task_id="literal", channel="facebook", conversation_id="c").expand(content=["{{ ds }}"])
        Send.partial(task_id="partial", channel="facebook", content=text()).expand(conversation_id=["c"])
        Bulk.partial(
            task_id="bulk_kwargs", channel="facebook", content="Hi {{ recipient.name }}"
        ).expand_kwargs(rows())
        Bulk.partial(task_id="bulk_dicts", channel="facebook", conversation_id="c").expand_kwargs(
            [{"recipients": [], "content": text()}, {"recipients": rows(), "content": "Day {{ ds }}"}]
        )
    return dag


def _keep(dag: Any, task_id: str, map_index: int, **values: Any) -> tuple[Any, set[int]]:
    task = dag.task_dict[task_id].unmap(values)
    return task, keep_xcom_values_literal(task, {"dag": dag, "ti": SimpleNamespace(map_index=map_index)})


def test_values_from_xcom_are_kept_and_the_authors_templates_are_not() -> None:
    dag = _dag()
    task, keep = _keep(dag, "kwargs_xcom", 0, conversation_id="c", content="Hi {{ x }}")
    assert {id(task.conversation_id), id(task.content)} <= keep and id(task.channel) not in keep

    task, keep = _keep(dag, "kwargs_list", 0, conversation_id="c", content="Day {{ ds }}")
    assert keep == set()  # a literal dict: the author's own templates
    task, keep = _keep(dag, "kwargs_list", 1, conversation_id="c", content="Hi {{ x }}")
    assert id(task.content) in keep and id(task.channel) not in keep  # a dict from an XCom

    task, keep = _keep(dag, "expand", 0, content="Hi {{ x }}")
    assert id(task.content) in keep and id(task.conversation_id) not in keep
    task, keep = _keep(dag, "literal", 0, content="{{ ds }}")
    assert keep == set()


def test_bulk_message_fields_from_an_xcom_are_named_and_the_authors_are_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dag = _dag()
    task = dag.task_dict["bulk_kwargs"].unmap({"recipients": [], "conversation_id": "c"})
    fields = dict(task.message_fields)
    names = values_from_xcom(task, {"dag": dag, "ti": SimpleNamespace(map_index=0)}, fields)
    assert "conversation_id" in names and not {"content", "channel"} & names

    text = dag.task_dict["text"].output
    task = dag.task_dict["bulk_dicts"].unmap({"recipients": [], "content": text})
    monkeypatch.setattr(type(text), "resolve", lambda self, context: "Hi {{ x }}")
    fields = dict(task.message_fields)
    names = values_from_xcom(task, {"dag": dag, "ti": SimpleNamespace(map_index=0)}, fields)
    assert names == {"content"} and fields["content"] == "Hi {{ x }}"
    task = dag.task_dict["bulk_dicts"].unmap({"recipients": [], "content": "Day {{ ds }}"})
    context = {"dag": dag, "ti": SimpleNamespace(map_index=1)}
    assert values_from_xcom(task, context, dict(task.message_fields)) == set()  # the author's template


def test_an_xcomarg_in_partial_is_resolved_as_data(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk import XComArg

    dag = _dag()
    task = dag.task_dict["partial"].unmap({"conversation_id": "c"})
    assert isinstance(task.content, XComArg)
    monkeypatch.setattr(type(task.content), "resolve", lambda self, context: "Hi {{ x }}")
    keep = keep_xcom_values_literal(task, {"dag": dag, "ti": SimpleNamespace(map_index=0)})
    assert task.content == "Hi {{ x }}" and id(task.content) in keep


def test_a_change_in_the_internals_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    dag = _dag()
    task = dag.task_dict["kwargs_xcom"].unmap({"conversation_id": "c", "content": "x"})
    context = {"dag": dag, "ti": SimpleNamespace(map_index=0)}
    monkeypatch.setattr(MappedOperator, "_get_specified_expand_input", lambda self: object())
    with pytest.raises(AirflowException, match=r"maps tasks differently.*has no value"):
        keep_xcom_values_literal(task, context)
    monkeypatch.delattr(MappedOperator, "_get_specified_expand_input")
    with pytest.raises(AirflowException, match="has no _get_specified_expand_input"):
        keep_xcom_values_literal(task, context)


def test_the_overridden_render_step_exists_on_this_airflow_and_a_change_fails_loudly() -> None:
    from airflow.sdk import BaseOperator

    from vantax_provider.templating import RENDER_STEP, XComValuesAsData, check_render_step

    check_render_step(BaseOperator)  # the Airflow under test (3.3 and the 3.1 floor) has it
    assert RENDER_STEP in vars(XComValuesAsData)
    for operator in (Send, Bulk):
        step = getattr(operator, RENDER_STEP)
        assert step is XComValuesAsData._do_render_template_fields, (
            f"{operator.__name__} no longer renders through the step it checks"
        )

    class Renamed:
        def _do_render_fields(
            self, parent: Any, template_fields: Any, context: Any, env: Any, seen: Any
        ) -> None:
            pass

    class Changed:
        def _do_render_template_fields(
            self, parent: Any, template_fields: Any, context: Any, env: Any
        ) -> None:
            pass

    for base in (Renamed, Changed):
        with pytest.raises(AirflowException, match="renders templates differently"):
            check_render_step(base)
