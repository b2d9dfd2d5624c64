"""
10,000 messages sent by the bulk operator and waited for in one deferral: the trigger's serialised
kwargs and the next kwargs stay the size they have for 10 messages, and one trigger run resolves them
all, reading the ids from XCom as the triggerer does (GetXCom answered by a fake supervisor).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from airflow.sdk.execution_time import task_runner

from tests.doubles import XComSupervisor
from tests.reliability._support import figures, make_context
from vantax_provider.emulator.testing import Emulator, running_emulator
from vantax_provider.operators.vantax_bulk import (
    WAIT_MESSAGES_XCOM_KEY,
    VantaxBulkSendMessageOperator,
    read_report,
)

try:
    from airflow.sdk.exceptions import TaskDeferred
except ImportError:  # Airflow < 3.3
    from airflow.exceptions import TaskDeferred  # type: ignore[no-redef,attr-defined]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture
def emu(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """A fresh emulator where a message takes 30 s to be delivered: still pending when the wait starts."""
    with running_emulator(queued_seconds=15.0, sent_seconds=15.0) as emulator:
        for name, value in emulator.airflow_env().items():
            monkeypatch.setenv(name, value)
        yield emulator


TIMES = ("end_time", "not_before")  # floats whose repr length varies by a byte or two


def _defer(size: int) -> tuple[VantaxBulkSendMessageOperator, dict[str, Any], Any, dict[str, Any], int, int]:
    operator = VantaxBulkSendMessageOperator(
        task_id="bulk", recipients=[{"cid": f"conv_scale_{size}_{i}"} for i in range(size)],
        conversation_id="{{ recipient.cid }}", channel="facebook", content="hello", wait_for_delivery=True,
        deferrable=True, poll_interval=0.5, delivery_timeout=600, max_concurrency=50,
    )  # fmt: skip
    context = make_context(operator.task_id)
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(context)  # type: ignore[arg-type]
    _, trigger_kwargs = deferred.value.trigger.serialize()
    trigger_bytes = len(json.dumps(trigger_kwargs))
    next_bytes = len(json.dumps(deferred.value.kwargs or {}))
    untimed = {k: v for k, v in trigger_kwargs.items() if k not in TIMES}
    return operator, context, deferred.value.trigger, untimed, trigger_bytes, next_bytes


def test_ten_thousand_pending_messages_resolve_in_one_trigger_run(
    emu: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    size = int(os.environ.get("VANTAX_SCALE_MESSAGES", "10000"))
    _, _, _, small_kwargs, small_trigger, small_next = _defer(10)
    operator, context, trigger, kwargs, trigger_bytes, next_bytes = _defer(size)
    assert kwargs == small_kwargs  # the same arguments, whatever the batch size, times aside
    assert abs(trigger_bytes - small_trigger) <= 4 and next_bytes == small_next == 2
    assert len(context["ti"].xcoms[WAIT_MESSAGES_XCOM_KEY]) == size
    supervisor = XComSupervisor(context["ti"])
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", supervisor, raising=False)
    trigger.not_before = None  # the settle time is tested elsewhere; here only the resolution counts
    gets_before = sum(1 for r in emu.requests() if r["method"] == "GET")

    async def first_event() -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("the trigger ended without an event")

    started = time.monotonic()
    event = asyncio.run(first_event())
    seconds = time.monotonic() - started
    gets = sum(1 for r in emu.requests() if r["method"] == "GET") - gets_before
    result = operator.execute_complete(context, event=event)  # type: ignore[arg-type]

    assert len(supervisor.requests) == 1  # the ids were read once, from XCom
    assert event["status"] == "success" and event["counts"]["success"] == size
    assert len(json.dumps(event)) < 2048  # the event does not list delivered messages
    assert emu.stats()["created"] == size + 10
    assert gets > size  # every message was read, and some more than once: they were pending
    assert result["delivery"]["counts"]["success"] == size
    # The resumed result stays small; each message's last status is in the delivery report.
    assert len(json.dumps(result)) < 8192 and result["delivery"]["undelivered"] == []
    delivery = list(read_report(result["delivery"]["report"]))
    assert [r["delivery_status"] for r in delivery] == ["delivered"] * size
    line = (
        f"bulk deferred wait: trigger kwargs {small_trigger} B for 10 messages, {trigger_bytes} B for "
        f"{size:,}; next kwargs {next_bytes} B; {size:,} pending resolved in one trigger run in "
        f"{seconds:.1f} s ({gets:,} status reads)"
    )
    print("\n" + line)
    f = figures("bulk-wait-scale")
    f.cases += 1
    f.survived += 1
    f.extra.update(kwargs_10=small_trigger, kwargs_n=trigger_bytes, messages=size, seconds=round(seconds, 1))
