"""
A refused API key (401 or 403) stops a bulk batch at the first refusal: the other recipients are not
sent one refused request each, the task fails without an Airflow retry, and a later run with the
right key sends every recipient once.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pytest
from vantax_dagtest import load_dag, task_states, xcom

from vantax_provider._compat import AirflowFailException
from vantax_provider.operators.vantax_bulk import (
    FAILED_RESULT_XCOM_KEY,
    VantaxBulkSendMessageOperator,
    read_report,
)

LOGICAL_DATE = datetime(2025, 3, 1, tzinfo=timezone.utc)
N = 1000

_DAG = """
from datetime import datetime, timedelta
from airflow.sdk import DAG
from vantax_provider.operators.vantax_bulk import VantaxBulkSendMessageOperator

with DAG("{dag_id}", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
    VantaxBulkSendMessageOperator(
        task_id="bulk",
        recipients=[{{"cid": f"conv_k{{i:04d}}"}} for i in range({n})],
        conversation_id="{{{{ recipient.cid }}}}",
        channel="facebook",
        content="Hello",
        max_concurrency={max_concurrency},
        retries=2,
        retry_delay=timedelta(seconds=0),
        report_path="{report}",
    )
"""


def _wrong_key(emu: Any, monkeypatch: pytest.MonkeyPatch, key: str = "vx_wrong_key_0000") -> None:
    conn = json.loads(emu.connection_json())
    conn["password"] = key
    monkeypatch.setenv("AIRFLOW_CONN_VANTAX_DEFAULT", json.dumps(conn))


@pytest.mark.parametrize("max_concurrency", [1, 32])
def test_a_wrong_key_stops_the_batch_and_the_task_is_not_retried(  # type: ignore[no-untyped-def]
    dag_env, monkeypatch, tmp_path, max_concurrency: int
) -> None:
    emu = dag_env
    _wrong_key(emu, monkeypatch)
    dag_id = f"vx_bulk_wrong_key_{max_concurrency}"
    source = _DAG.format(dag_id=dag_id, n=N, max_concurrency=max_concurrency, report=tmp_path)
    run = load_dag(dag_id, source).test(logical_date=LOGICAL_DATE, run_after=LOGICAL_DATE)

    assert task_states(run) == {"bulk": ("failed", 1)}  # one try: a retry would be refused the same way
    requests = emu.requests()
    # One refused request, or at most the ones already in flight when the first refusal came back.
    assert 1 <= len(requests) <= max_concurrency, len(requests)
    assert all(r["status"] == 401 and not r["authorization_ok"] for r in requests)
    assert emu.stats()["created"] == 0
    result = xcom(run, "bulk", key=FAILED_RESULT_XCOM_KEY)
    assert (result["total"], result["sent"], result["failed"]) == (N, 0, len(requests))
    rows = list(read_report(result["report"]))
    assert len(rows) == len(requests) and all("401" in r["error"] for r in rows)


def test_a_403_stops_the_batch_naming_the_refusal_and_a_fixed_key_sends_everyone_once(  # type: ignore[no-untyped-def]
    emu, context, store, tmp_path
) -> None:
    emu.inject("status", status=403, method="POST", times=None)
    recipients = [{"cid": f"conv_f{i:04d}"} for i in range(N)]

    def op() -> VantaxBulkSendMessageOperator:
        return VantaxBulkSendMessageOperator(
            task_id="bulk", recipients=recipients, conversation_id="{{ recipient.cid }}",
            channel="facebook", content="Hello", max_concurrency=8, report_path=str(tmp_path),
        )  # fmt: skip

    ctx = context(store)
    with pytest.raises(AirflowFailException) as failure:
        op().execute(ctx)
    text = str(failure.value)
    assert "HTTP 403" in text and "API key" in text and "not sent" in text, text
    refused = len(emu.requests())
    assert 1 <= refused <= 8
    assert ctx["ti"].xcoms[FAILED_RESULT_XCOM_KEY]["failed"] == refused

    # The key is fixed: the next try sends every recipient, each once (the refused ones included).
    emu.clear_faults()
    retry = context(store)
    retry["ti"].try_number = 2
    result = op().execute(retry)
    assert (result["sent"], result["skipped_already_sent"], result["failed"]) == (N, 0, 0)
    assert emu.stats()["created"] == N
    assert len(emu.requests()) == refused + N
