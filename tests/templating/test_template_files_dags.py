"""
Template files versus text ending in .txt/.html/.j2, for the operator and the notifier (issue 13).

A value is a template file only when it can be one (no white space, no URL scheme) and the file is
in the DAG's template search path; any other value is text, rendered as usual.  A value that looks
like a file name but is not found fails, naming the field and the search path, before any request.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from vantax_dagtest import dags_folder, load_dag, task_states

from vantax_provider._compat import AirflowFailException
from vantax_provider.exceptions import VantaxValidationError
from vantax_provider.notifications.vantax import VantaxNotifier
from vantax_provider.operators.vantax import VantaxSendMessageOperator
from vantax_provider.templating import looks_like_file_name

FILES = {
    "tpl13/plain.j2": "Hello {{ params.name }} on {{ ds }}",
    "tpl13/body.html": "<p>Hi <b>{{ params.name }}</b>, see https://example.com/menu.html</p>",
    "tpl13/alert.j2": "{{ ti.task_id }} failed on {{ ds }} ({{ params.name }})",
}

DAG_SOURCE = """
from datetime import datetime
from airflow.sdk import DAG, task
from vantax_provider.notifications.vantax import VantaxNotifier
from vantax_provider.operators.vantax import VantaxSendMessageOperator as Send

with DAG("tpl_files", schedule=None, start_date=datetime(2025, 1, 1), params={"name": "Ada"}) as dag:
    Send(task_id="url", conversation_id="c_url", channel="sms", from_phone_number_id="pn_1",
         content="Your menu is online: https://example.com/menu.html")
    Send(task_id="bare_url", conversation_id="c_bare_url", channel="facebook",
         content="https://example.com/notes.txt")
    Send(task_id="words", conversation_id="c_words", channel="facebook", content="See notes.txt")
    Send(task_id="rendered", conversation_id="c_rendered", channel="facebook",
         content="{{ params.name }}: report of {{ ds }} in report.j2")
    Send(task_id="email_text", conversation_id="c_email_text", channel="email", subject="Menu",
         content="Plain text in menu.txt", html="<a href='https://example.com/{{ ds }}/menu.html'>menu.html")
    Send(task_id="email_url", conversation_id="c_email_url", channel="email", subject="Menu",
         content="https://example.com/menu.txt", html="https://example.com/menu.html")
    Send(task_id="email_files", conversation_id="c_email_files", channel="email", subject="Files",
         content="tpl13/plain.j2", html="tpl13/body.html")
    Send(task_id="missing", conversation_id="c_missing", channel="facebook", content="tpl13/absent.html",
         retries=2, retry_delay=0)

    @task(on_failure_callback=[
        VantaxNotifier(conversation_id="n_url", channel="facebook",
                       content="Runbook: https://example.com/runbook.html"),
        VantaxNotifier(conversation_id="n_words", channel="email", subject="{{ ti.task_id }}",
                       content="see runbook.txt", html="<p>{{ ti.task_id }}: see runbook.html"),
        VantaxNotifier(conversation_id="n_file", channel="facebook", content="tpl13/alert.j2"),
        VantaxNotifier(conversation_id="n_missing", channel="facebook", content="runbook.txt"),
    ])
    def boom():
        raise RuntimeError("no")

    boom()
"""


def test_text_and_template_files_in_a_dag_run(dag_env: Any) -> None:
    dag = load_dag("tpl_files", DAG_SOURCE, FILES)
    dr = dag.test()
    ds = dr.logical_date.strftime("%Y-%m-%d")
    states = task_states(dr)
    failed = {"missing", "boom"}
    assert {k: v for k, v in states.items() if k not in failed} == {
        k: ("success", 1)
        for k in ("url", "bare_url", "words", "rendered", "email_text", "email_url", "email_files")
    }
    # A missing file fails on the first try (no retries: the same DAG files fail the same way).
    assert states["missing"] == ("failed", 1)
    assert states["boom"][0] == "failed"
    sent = {m["conversation_id"]: m["body"] for m in dag_env.messages()}
    assert sent.pop("c_url") == {
        "channel": "sms", "from_phone_number_id": "pn_1",
        "content": "Your menu is online: https://example.com/menu.html",
    }  # fmt: skip
    assert sent.pop("c_bare_url")["content"] == "https://example.com/notes.txt"
    assert sent.pop("c_words")["content"] == "See notes.txt"
    assert sent.pop("c_rendered")["content"] == f"Ada: report of {ds} in report.j2"
    assert sent.pop("c_email_text") == {
        "channel": "email", "subject": "Menu", "content": "Plain text in menu.txt",
        "html": f"<a href='https://example.com/{ds}/menu.html'>menu.html",
    }  # fmt: skip
    assert sent.pop("c_email_url") == {
        "channel": "email", "subject": "Menu", "content": "https://example.com/menu.txt",
        "html": "https://example.com/menu.html",
    }  # fmt: skip
    assert sent.pop("c_email_files") == {
        "channel": "email", "subject": "Files", "content": f"Hello Ada on {ds}",
        "html": "<p>Hi <b>Ada</b>, see https://example.com/menu.html</p>",
    }  # fmt: skip
    # The notifier, by the same rule.
    assert sent.pop("n_url")["content"] == "Runbook: https://example.com/runbook.html"
    assert sent.pop("n_words") == {
        "channel": "email", "subject": "boom", "content": "see runbook.txt",
        "html": "<p>boom: see runbook.html",
    }  # fmt: skip
    assert sent.pop("n_file")["content"] == f"boom failed on {ds} (Ada)"
    assert sent == {}  # nothing for c_missing nor n_missing
    assert not [r for r in dag_env.requests() if r.get("conversation_id") in ("c_missing", "n_missing")]


@pytest.mark.parametrize(
    ("value", "is_file_name"),
    [
        ("body.html", True),
        ("emails/welcome.j2", True),
        ("notes.txt", True),
        ("See notes.txt", False),
        ("https://example.com/menu.html", False),
        ("mailto:ops@example.com?body=x.txt", False),
        ("line one\nbody.html", False),
        ("tab\tbody.html", False),
        ("body.htm", False),
        ("body.html ", False),
        (None, False),
        (["body.html"], False),
    ],
)
def test_what_can_name_a_template_file(value: object, is_file_name: bool) -> None:
    assert looks_like_file_name(value) is is_file_name


def _dag_with(tmp_name: str, task: Any) -> Any:
    from airflow.sdk import DAG

    dag = DAG(
        tmp_name, schedule=None, start_date=datetime(2025, 1, 1), template_searchpath=[str(dags_folder())]
    )
    dag.add_task(task)
    return dag


def test_a_missing_file_names_the_field_and_the_search_path(tmp_path: Path) -> None:
    op = VantaxSendMessageOperator(
        task_id="t", conversation_id="c", channel="email", subject="s", content="ok", html="body.html"
    )
    dag = _dag_with("tpl_missing_unit", op)
    with pytest.raises(AirflowFailException) as raised:
        op.render_template_fields({"ds": "2025-01-01"}, dag.get_template_env())  # type: ignore[arg-type]
    text = str(raised.value)
    assert "html: 'body.html' looks like a template file name" in text
    assert str(dags_folder()) in text and "template_searchpath" in text
    assert "{{ 'body.html' }}" in text  # how to send the words as text

    notifier = VantaxNotifier(conversation_id="c", channel="facebook", content="runbook.txt")
    with pytest.raises(VantaxValidationError, match=r"content: 'runbook.txt' looks like a template file"):
        notifier.render_template_fields({"dag": dag}, dag.get_template_env())  # type: ignore[arg-type]


def test_the_escape_sends_a_file_like_word_as_text() -> None:
    op = VantaxSendMessageOperator(
        task_id="t", conversation_id="c", channel="facebook", content="{{ 'body.html' }}"
    )
    dag = _dag_with("tpl_escape_unit", op)
    op.render_template_fields({}, dag.get_template_env())  # type: ignore[arg-type]
    assert op.content == "body.html"
