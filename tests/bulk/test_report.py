"""
The bulk result XCom stays small whatever the batch; every recipient's outcome goes to the JSON Lines
report written through ObjectStoragePath, one file per try.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from vantax_dagtest import load_dag, task_states, xcom

from vantax_provider._compat import AirflowException
from vantax_provider.bulk import report as _bulk_report
from vantax_provider.operators.vantax_bulk import (
    FAILED_RESULT_XCOM_KEY,
    VantaxBulkSendMessageOperator,
    read_report,
)

LOGICAL_DATE = datetime(2025, 3, 1, tzinfo=timezone.utc)

_DAG = """
from datetime import datetime
from airflow.sdk import DAG
from vantax_provider.operators.vantax_bulk import VantaxBulkSendMessageOperator

with DAG("{dag_id}", schedule=None, start_date=datetime(2025, 1, 1), params={{"root": "{root}"}}) as dag:
    VantaxBulkSendMessageOperator(
        task_id="bulk",
        recipients=[{{"cid": f"conv_{prefix}{{i:06d}}", "name": f"N{{i}}"}} for i in range({n})],
        conversation_id="{{{{ recipient.cid }}}}",
        channel="email",
        subject="News",
        content="Hi {{{{ recipient.name }}}}",
        max_concurrency=64,
        progress_interval=60,
        report_path="{{{{ params.root }}}}/{{{{ ds }}}}",
    )
"""


def _run(dag_id: str, n: int, root: Path) -> Any:
    dag = load_dag(dag_id, _DAG.format(dag_id=dag_id, n=n, prefix=dag_id[-1], root=root))
    return dag.test(logical_date=LOGICAL_DATE, run_after=LOGICAL_DATE)


def _stored_bytes(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":")))


@pytest.mark.slow  # 10,000 messages through dag.test(): minutes on a loaded 2-core box
def test_xcom_stays_small_for_10_and_10000_recipients_and_the_report_has_every_one(  # type: ignore[no-untyped-def]
    dag_env, tmp_path
) -> None:
    emu = dag_env
    figures = {}
    for n, dag_id in ((10, "vx_report_s"), (10_000, "vx_report_l")):
        run = _run(dag_id, n, tmp_path)
        assert task_states(run) == {"bulk": ("success", 1)}
        result = xcom(run, "bulk")
        assert (result["total"], result["sent"], result["failed"], result["invalid"]) == (n, n, 0, 0)
        assert (result["outcomes"], result["listed_total"], result["truncated"]) == ([], 0, False)
        # The templated folder was rendered: <root>/<ds>/<dag_id>/<run_id>/<task>.try-<n>.jsonl.
        uri = result["report"]
        assert uri.startswith(f"file://{tmp_path}/2025-03-01/{dag_id}/") and uri.endswith("/bulk.try-1.jsonl")
        rows = list(read_report(uri))
        assert len(rows) == n and [r["index"] for r in rows] == list(range(n))
        assert {r["outcome"] for r in rows} == {"sent"}
        # Counted against what the emulator really created for this run's conversations.
        mine = [m for m in emu.messages() if m["conversation_id"][5] == dag_id[-1]]
        created = {m["id"]: m["conversation_id"] for m in mine}
        assert {r["message_id"]: r["conversation_id"] for r in rows} == created
        text = Path(uri.removeprefix("file://")).read_text()
        assert "Hi N" not in text and emu.api_key not in text  # no bodies, no key
        figures[n] = _stored_bytes(result)
    print(f"\nbulk result XCom: {figures[10]} B for 10 recipients, {figures[10_000]} B for 10,000 "
          "(every outcome in the JSON Lines report)")  # fmt: skip
    assert figures[10] < 8192 and figures[10_000] < 8192
    assert abs(figures[10_000] - figures[10]) < 64  # the same shape: only the digits differ


def _rows(n: int, failed: int) -> list[dict[str, Any]]:
    out = [
        {"index": i, "conversation_id": f"conv_{i:06d}", "outcome": "sent", "message_id": f"msg_{i:024d}",
         "status": "queued"}
        for i in range(n - failed)
    ]  # fmt: skip
    out += [
        {"index": i, "conversation_id": f"conv_{i:06d}", "outcome": "failed",
         "error": "VantaxServerError: " + "x" * 500}
        for i in range(n - failed, n)
    ]  # fmt: skip
    return out


def test_the_result_has_the_same_size_for_10_and_100000_rows() -> None:
    """The fast check of the bound (the DAG-run one above is slow): summary() of the rows the report gets."""
    sizes = {}
    for n, failed in ((10, 0), (100_000, 0), (10, 10), (100_000, 2_000), (100_000, 50_000)):
        rows = _rows(n, failed)
        counts = Counter(r["outcome"] for r in rows)
        listing = _bulk_report.Listing(1000)
        for row in rows:
            listing.add(row)
        result = _bulk_report.summary(n, counts, listing, report="file:///r/d/run/t.try-1.jsonl")
        assert (result["listed_total"], result["truncated"]) == (failed, failed > 1000)
        assert len(result["outcomes"]) == min(failed, 1000)
        assert all(len(o["error"]) == _bulk_report.LISTED_ERROR_CHARS for o in result["outcomes"])
        sizes[(n, failed)] = _stored_bytes(result)
    assert sizes[(10, 0)] < 400 and abs(sizes[(100_000, 0)] - sizes[(10, 0)]) < 16
    # 1,000 listed at most, each error cut to 300 characters: the same bound at 2,000 or 50,000 failed.
    assert abs(sizes[(100_000, 2_000)] - sizes[(100_000, 50_000)]) < 16 and sizes[(100_000, 2_000)] < 400_000


def _op(recipients: list[dict[str, Any]], **kwargs: Any) -> VantaxBulkSendMessageOperator:
    return VantaxBulkSendMessageOperator(
        task_id="bulk", recipients=recipients, conversation_id="{{ recipient.cid }}", channel="email",
        subject="S", content="Hi {{ recipient.name }}", **kwargs,
    )  # fmt: skip


def _recipients(good: int, missing_name: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"cid": f"conv_g{i:04d}", "name": "A"} for i in range(good)]
    out += [{"cid": f"conv_m{i:04d}"} for i in range(missing_name)]  # no name: invalid
    return out


def test_listed_recipients_are_capped_with_exact_totals(emu, context, tmp_path) -> None:  # type: ignore[no-untyped-def]
    ctx = context()
    op = _op(_recipients(5, 40), max_listed_outcomes=10, max_failure_ratio=1, report_path=str(tmp_path))
    result = op.execute(ctx)
    assert (result["total"], result["sent"], result["invalid"]) == (45, 5, 40)
    assert len(result["outcomes"]) == 10 and result["listed_total"] == 40 and result["truncated"] is True
    assert [o["index"] for o in result["outcomes"]] == list(range(5, 15))  # the first ones, in list order
    assert all(o["outcome"] == "invalid" and "content" in o["error"] for o in result["outcomes"])
    rows = list(read_report(result["report"]))
    assert len(rows) == 45
    assert Counter(r["outcome"] for r in rows) == {"invalid": 40, "sent": 5}
    assert emu.stats()["created"] == 5
    # A plain local path becomes a file:// URI; the default file name carries dag, run, task and try.
    assert result["report"] == f"file://{tmp_path}/bulk_dag/run1/bulk.try-1.jsonl"


def test_failed_task_pushes_the_bounded_result_and_writes_the_report(emu, context, tmp_path) -> None:  # type: ignore[no-untyped-def]
    emu.inject("status", status=400, method="POST", conversation_id="conv_g0003", times=1)
    ctx = context()
    with pytest.raises(AirflowException, match="1 of 6") as failure:
        _op(_recipients(6, 0), report_path=str(tmp_path)).execute(ctx)
    result = ctx["ti"].xcoms[FAILED_RESULT_XCOM_KEY]
    assert result["report"] in str(failure.value)
    [failed] = result["outcomes"]
    assert (failed["index"], failed["outcome"], failed["conversation_id"]) == (3, "failed", "conv_g0003")
    rows = list(read_report(result["report"]))
    assert [r["outcome"] for r in rows] == ["sent"] * 3 + ["failed"] + ["sent"] * 2
    assert emu.stats()["created"] == 5


def test_an_unwritable_report_folder_fails_before_anything_is_sent(emu, context, tmp_path) -> None:  # type: ignore[no-untyped-def]
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(AirflowException, match=r"report_path: cannot write .*nothing was sent"):
        _op(_recipients(3, 0), report_path=str(blocker / "reports")).execute(context())
    assert emu.requests() == []


def test_a_report_that_cannot_be_written_after_sending_keeps_the_result(  # type: ignore[no-untyped-def]
    emu, context, tmp_path, monkeypatch, capfd
) -> None:
    def disk_full(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_bulk_report.ReportWriter, "_flush", disk_full)
    emu.inject("status", status=400, method="POST", conversation_id="conv_g0001", times=1)
    result = _op(_recipients(4, 0), report_path=str(tmp_path), max_failure_ratio=0.5).execute(context())
    # The sends happened: the task keeps their result rather than failing and inviting a re-send.
    assert (result["sent"], result["failed"], result["report"]) == (3, 1, None)
    assert "No space left on device" in result["report_error"]
    assert [o["conversation_id"] for o in result["outcomes"]] == ["conv_g0001"]
    assert emu.stats()["created"] == 3
    out, err = capfd.readouterr()
    assert "Could not write the Vantax bulk report" in out + err and "No space left on device" in out + err


def test_report_path_none_writes_nothing(emu, context, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    result = _op(_recipients(2, 0), report_path=None).execute(context())
    assert result["sent"] == 2 and result["report"] is None
    assert list(tmp_path.iterdir()) == []


def test_the_default_folder_is_under_airflow_home_and_each_try_has_its_own_file(  # type: ignore[no-untyped-def]
    emu, context, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    first = _op(_recipients(2, 0)).execute(context())
    ctx = context()
    ctx["ti"].try_number = 2
    second = _op(_recipients(2, 0)).execute(ctx)
    assert first["report"] == f"file://{tmp_path}/vantax_reports/bulk_dag/run1/bulk.try-1.jsonl"
    assert second["report"] == f"file://{tmp_path}/vantax_reports/bulk_dag/run1/bulk.try-2.jsonl"
    assert len(list(read_report(first["report"]))) == len(list(read_report(second["report"]))) == 2


def test_report_names_are_safe_and_distinct() -> None:
    class TI:
        dag_id, task_id, map_index, try_number = "d", "group.send", 7, 3
        run_id = "manual__2025-03-01T00:00:00+00:00"

    uri = _bulk_report.report_uri("s3://bucket/prefix", TI())
    assert uri.startswith("s3://bucket/prefix/d/manual__2025-03-01T00_00_00_00_00-")
    assert uri.endswith("/group.send.map-7.try-3.jsonl")
    TI.run_id = "manual__2025-03-01T00_00_00_00_00"  # what the first one would become without its hash
    assert _bulk_report.report_uri("s3://bucket/prefix", TI()) != uri
    assert _bulk_report.base_uri(False) is None and _bulk_report.base_uri("") is None
    with pytest.raises(AirflowException, match="report_path must be a folder"):
        _bulk_report.base_uri(3)


def test_the_report_is_in_list_order_when_sends_finish_out_of_order(emu, context, tmp_path) -> None:  # type: ignore[no-untyped-def]
    emu.inject("stall", stall_seconds=1.0, method="POST", conversation_id="conv_g0000", times=1)
    result = _op(_recipients(30, 0), report_path=str(tmp_path), max_concurrency=8).execute(context())
    assert result["sent"] == 30
    creates = [r["conversation_id"] for r in emu.requests() if r["method"] == "POST"]
    assert creates[-1] == "conv_g0000"  # the first recipient finished last
    rows = list(read_report(result["report"]))
    assert [r["index"] for r in rows] == list(range(30))
    assert [r["conversation_id"] for r in rows] == [f"conv_g{i:04d}" for i in range(30)]


def test_rows_reach_the_report_as_soon_as_those_before_them_are_done(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The batch keeps no row once written: a row waits only for the rows before it."""
    from vantax_provider.bulk.outcomes import Batch

    monkeypatch.setattr(_bulk_report, "FLUSH_LINES", 3)
    path = tmp_path / "r.jsonl"
    writer = _bulk_report.ReportWriter(f"file://{path}", None)
    batch = Batch(7, None, None, progress_interval=60, skip_uncertain=False, report=writer,  # type: ignore[arg-type]
                  listed_limit=2, keep_pairs=False)  # fmt: skip

    def lines() -> list[int]:
        return [json.loads(line)["index"] for line in path.read_text().splitlines()]

    for index in (1, 2):
        batch.invalid(index, f"conv_{index}", "bad")
    assert lines() == [] and len(batch._waiting) == 2  # row 0 is not done yet
    batch.invalid(0, "conv_0", "bad")
    assert lines() == [0, 1, 2] and batch._waiting == {}  # three rows: one write
    for index in (4, 3, 6, 5):
        batch.invalid(index, f"conv_{index}", "bad")
    batch.finish()
    assert lines() == list(range(7)) and writer.lines == 7
    assert [r["index"] for r in batch.listing.rows] == [0, 1] and batch.listing.total == 7
    assert batch.examples == [f"#{i}: bad" for i in range(5)]


_PRIVATE_DAG = """
from datetime import datetime
from airflow.sdk import DAG
from vantax_provider.operators.vantax_bulk import VantaxBulkSendMessageOperator

with DAG("vx_bulk_private_report", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
    VantaxBulkSendMessageOperator(
        task_id="bulk", recipients=[{{"cid": "conv_p1"}}, {{"cid": "conv_p2"}}],
        conversation_id="{{{{ recipient.cid }}}}", channel="facebook", content="Hi",
        wait_for_delivery=True, deferrable=False, poll_interval=0.1, delivery_timeout=30,
        report_path="{root}/new/reports",
    )
"""


def test_reports_and_the_folders_made_for_them_are_owner_only(dag_env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os
    import stat

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    tmp_path.chmod(0o755)
    previous = os.umask(0o022)  # the usual umask, under which files are created 0644
    try:
        dag = load_dag("vx_bulk_private_report", _PRIVATE_DAG.format(root=tmp_path))
        run = dag.test(logical_date=LOGICAL_DATE, run_after=LOGICAL_DATE)
    finally:
        os.umask(previous)
    assert task_states(run) == {"bulk": ("success", 1)}
    result = xcom(run, "bulk")
    report = Path(result["report"].removeprefix("file://"))
    delivery = Path(result["delivery"]["report"].removeprefix("file://"))
    assert len(list(read_report(result["report"]))) == 2 and delivery.exists()
    # The reports hold conversation ids: owner-only files, in owner-only folders where the task made them.
    assert (oct(mode(report)), oct(mode(delivery))) == ("0o600", "0o600")
    made = [tmp_path / "new", *[p for p in report.parents if tmp_path / "new" in p.parents]]
    assert len(made) == 4  # new, reports, the DAG's, the run's: all made by the task
    assert {oct(mode(folder)) for folder in made} == {"0o700"}, [(str(p), oct(mode(p))) for p in made]
    assert mode(tmp_path) == 0o755  # a folder that was there is left as it was
