"""
Airflow renders the bulk operator's ``recipients`` field string by string; the operator keeps a
string that would render as itself without compiling it.  Against Airflow's own rendering, for
generated strings in each kind of DAG Jinja environment, the result is the same.
"""

from __future__ import annotations

from typing import Any

import pytest
from airflow.sdk import DAG, BaseOperator
from hypothesis import given, settings
from hypothesis import strategies as st
from jinja2.ext import Extension

from vantax_provider.operators.vantax_bulk import VantaxBulkSendMessageOperator


class Shouting(Extension):
    """A Jinja extension that rewrites the source before it is parsed."""

    def preprocess(self, source: str, name: str | None, filename: str | None = None) -> str:
        return source.upper()


#: DAG (and, under "operator", operator) settings that change what Jinja does with plain text.
ENVIRONMENTS: dict[str, dict[str, Any]] = {
    "default": {},
    "keep trailing newline": {"jinja_environment_kwargs": {"keep_trailing_newline": True}},
    "other delimiters": {
        "jinja_environment_kwargs": {
            "variable_start_string": "[[", "variable_end_string": "]]",
            "block_start_string": "[%", "block_end_string": "%]",
        }
    },
    "line statements": {"jinja_environment_kwargs": {"line_statement_prefix": "#"}},
    "CRLF newlines": {"jinja_environment_kwargs": {"newline_sequence": "\r\n"}},
    "native": {"render_template_as_native_obj": True},
    "native on the operator": {"operator": {"render_template_as_native_obj": True}},
    "an extension": {"jinja_environment_kwargs": {"extensions": [Shouting]}},
}  # fmt: skip
TEXT = st.text(alphabet="ab1 {}%#[]\r\n\t", max_size=12)


class AirflowRendering(VantaxBulkSendMessageOperator):
    """The operator with Airflow's own rendering all the way down (nested values included)."""

    render_template = BaseOperator.render_template  # type: ignore[assignment]


def _operator(
    settings: dict[str, Any], cls: type[VantaxBulkSendMessageOperator] = VantaxBulkSendMessageOperator
) -> VantaxBulkSendMessageOperator:
    dag_settings = {k: v for k, v in settings.items() if k != "operator"}
    with DAG("vx_render_fast_path", schedule=None, **dag_settings):
        return cls(
            task_id="bulk", recipients=[], conversation_id="{{ recipient.cid }}", channel="email",
            subject="s", content="Hi", **settings.get("operator", {}),
        )  # fmt: skip


def _render(op: BaseOperator, value: Any) -> tuple[str, Any]:
    try:
        # The environment the task runner passes: the DAG's (``ti.task.dag.get_template_env()``).
        return "value", op.render_template(value, {"ds": "2025-01-01"}, op.dag.get_template_env())
    except Exception as exc:  # a template error must be the same error both ways
        return "error", type(exc)


@pytest.mark.parametrize("name", list(ENVIRONMENTS))
@settings(max_examples=300, deadline=None)
@given(value=st.one_of(TEXT, st.lists(st.dictionaries(st.sampled_from(["cid", "name"]), TEXT), max_size=3)))
def test_a_kept_string_is_what_airflow_would_render(name: str, value: Any) -> None:
    if "operator" in ENVIRONMENTS[name] and not hasattr(BaseOperator, "render_template_as_native_obj"):
        pytest.skip("this Airflow's operators take no render_template_as_native_obj")
    ours = _render(_operator(ENVIRONMENTS[name]), value)
    airflows = _render(_operator(ENVIRONMENTS[name], AirflowRendering), value)
    assert ours == airflows, (name, value)


def test_plain_recipient_strings_are_not_compiled(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path is taken: a list of plain recipients compiles no template at all."""
    op = _operator({})
    env = op.get_template_env()
    compiled: list[str] = []
    original = type(env).from_string

    def counting(self: Any, source: Any, *args: Any, **kwargs: Any) -> Any:
        compiled.append(source)
        return original(self, source, *args, **kwargs)

    monkeypatch.setattr(type(env), "from_string", counting)
    recipients = [{"cid": f"conv_{i}", "name": f"Customer {i}", "plan": "pro"} for i in range(500)]
    recipients.append({"cid": "conv_t", "name": "{{ ds }}"})
    rendered = op.render_template(recipients, {"ds": "2025-01-01"}, env)
    assert rendered[:500] == recipients[:500] and rendered[500]["name"] == "2025-01-01"
    assert compiled == ["{{ ds }}"]
