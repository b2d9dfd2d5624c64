"""
Bad input to the bulk operator: a template that does not compile fails the task without a retry,
and a recipient's invalid value (phone data, message content) is never quoted in the XCom result,
the report or the exception: the field and the reason are.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pytest
from vantax_dagtest import load_dag, task_states, xcom

from vantax_provider._compat import AirflowException, AirflowFailException
from vantax_provider.operators.vantax_bulk import (
    FAILED_RESULT_XCOM_KEY,
    VantaxBulkSendMessageOperator,
    read_report,
)

LOGICAL_DATE = datetime(2025, 3, 1, tzinfo=timezone.utc)
PHONE = "+15550001234"  # a recipient's phone number, in a media URL that is not a URL

_DAG = """
from datetime import datetime, timedelta
from airflow.sdk import DAG
from vantax_provider.operators.vantax_bulk import VantaxBulkSendMessageOperator

with DAG("{dag_id}", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
    VantaxBulkSendMessageOperator(
        task_id="bulk",
        recipients=[{{"cid": "conv_a", "phone": "{phone}"}}, {{"cid": "conv_b", "phone": "{phone}"}}],
        conversation_id="{{{{ recipient.cid }}}}",
        channel="facebook",
        content={content!r},
        media_url=[{media!r}],
        retries=2,
        retry_delay=timedelta(seconds=0),
        report_path="{report}",
    )
"""


def _run(dag_id: str, tmp_path: Any, *, content: str, media: str) -> Any:
    source = _DAG.format(dag_id=dag_id, phone=PHONE, content=content, media=media, report=tmp_path)
    return load_dag(dag_id, source).test(logical_date=LOGICAL_DATE, run_after=LOGICAL_DATE)


@pytest.mark.parametrize("field", ["content", "media_url"])
def test_a_template_syntax_error_fails_without_a_retry(dag_env, tmp_path, field: str) -> None:  # type: ignore[no-untyped-def]
    broken = "Hi {{ recipient.phone "
    fields = {"content": "Hi", "media": "https://cdn.example.com/a.png", field.split("_")[0]: broken}
    run = _run(f"vx_bulk_syntax_{field}", tmp_path, content=fields["content"], media=fields["media"])
    assert task_states(run) == {"bulk": ("failed", 1)}  # the same template fails the same way on a retry
    assert dag_env.stats()["requests"] == 0


def test_a_syntax_error_names_the_field_and_the_reason(emu, context) -> None:  # type: ignore[no-untyped-def]
    op = VantaxBulkSendMessageOperator(
        task_id="bulk", recipients=[{"cid": "conv_a"}], conversation_id="{{ recipient.cid }}",
        channel="facebook", content="Hi", media_url=["https://x.io/a.png", "{% if %}"],
    )  # fmt: skip
    with pytest.raises(AirflowFailException, match=r"media_url\[1\]: is not a valid template: .*line 1"):
        op.execute(context())
    assert emu.stats()["requests"] == 0


def test_an_invalid_media_url_is_named_not_quoted(dag_env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    run = _run("vx_bulk_bad_url", tmp_path, content="Hi", media="tel:{{ recipient.phone }}")
    assert task_states(run) == {"bulk": ("failed", 1)}
    result = xcom(run, "bulk", key=FAILED_RESULT_XCOM_KEY)
    assert result["invalid"] == 2 and dag_env.stats()["requests"] == 0
    rows = list(read_report(result["report"]))
    for where in (json.dumps(result), json.dumps(rows)):
        assert PHONE not in where and "tel:" not in where, where
    assert all(r["error"].startswith("media_url: ") and "absolute http(s) URL" in r["error"] for r in rows)


def test_no_invalid_value_is_quoted_in_the_exception(emu, context) -> None:  # type: ignore[no-untyped-def]
    secret = "Your code is 918273"
    recipients = [
        {"cid": "conv_a", "media": f"https://x.io/{secret} {PHONE}"},  # white space
        {"cid": "conv_b", "media": f"sms:{PHONE}"},  # not http(s)
        {"cid": "conv_c", "media": "https://x.io/" + PHONE * 300},  # too long
    ]
    op = VantaxBulkSendMessageOperator(
        task_id="bulk", recipients=recipients, conversation_id="{{ recipient.cid }}", channel="facebook",
        content="Hi", media_url=["{{ recipient.media }}"],
    )  # fmt: skip
    ctx = context()
    with pytest.raises(AirflowException) as failure:
        op.execute(ctx)
    stored = json.dumps(ctx["ti"].xcoms[FAILED_RESULT_XCOM_KEY])
    for text in (str(failure.value), stored):
        assert "media_url" in text and PHONE not in text and "918273" not in text, text


def test_a_recipient_key_that_is_not_text_is_not_quoted(emu, context) -> None:  # type: ignore[no-untyped-def]
    recipients = [{"cid": "conv_a", "phones": {15550001234: "mobile"}}]
    op = VantaxBulkSendMessageOperator(
        task_id="bulk", recipients=recipients, conversation_id="{{ recipient.cid }}", channel="facebook",
        content="Hi", max_failure_ratio=1,
    )  # fmt: skip
    [row] = op.execute(context())["outcomes"]
    assert row["error"] == "recipient.phones has a key of type int; keys must be text", row
