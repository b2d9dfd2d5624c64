"""
``VantaxNotifier`` as a deadline alert's callback, run by Airflow's own trigger as the triggerer runs it.

Airflow 3.1 runs ``AsyncCallback``s through ``DeadlineCallbackTrigger``, 3.2 and 3.3 through
``CallbackTrigger``: each imports the callback path (the notifier class), calls it with the
alert's kwargs and a ``context`` of ``{"dag_run": <the run as the REST API shows it>,
"deadline": {"id", "deadline_time"}}``, and awaits what it returns.  The real-deployment test
(a run that misses its deadline on a scheduler and triggerer) is
``tests/e2e/test_examples_rest.py``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from vantax_provider.notifications.vantax import VantaxNotifier

PATH = "vantax_provider.notifications.vantax.VantaxNotifier"


def _trigger(kwargs: dict[str, Any]) -> Any:
    try:
        from airflow.triggers.callback import CallbackTrigger as Trigger  # Airflow 3.2+
    except ImportError:
        from airflow.triggers.deadline import DeadlineCallbackTrigger as Trigger  # type: ignore[no-redef]
    return Trigger(callback_path=PATH, callback_kwargs=kwargs)


def _context(deadline_id: str = "0199a0c4-0000-7000-8000-000000000001") -> dict[str, Any]:
    return {
        "dag_run": {
            "dag_id": "nightly",
            "dag_run_id": "manual__2025-01-02T02:00:00+00:00",
            "logical_date": None,
            "queued_at": "2025-01-02T02:00:00Z",
            "state": "running",
        },
        "deadline": {"id": deadline_id, "deadline_time": "2025-01-02T03:00:00Z"},
    }


def _state(event: dict[str, Any]) -> str:
    """The event's state as a plain string (an enum on 3.1, a str enum later)."""
    return str(getattr(event["state"], "value", event["state"]))


def _run(kwargs: dict[str, Any]) -> list[dict[str, Any]]:
    async def events() -> list[dict[str, Any]]:
        return [dict(event.payload) async for event in _trigger(kwargs).run()]

    return asyncio.run(events())


ALERT = {
    "conversation_id": "conv_oncall",
    "channel": "facebook",
    "content": "{{ dag_run.dag_id }} is late: run {{ dag_run.dag_run_id }} is not done by "
    "{{ deadline.deadline_time }}.",
}


def test_airflow_accepts_the_notifier_as_an_async_callback() -> None:
    try:
        from airflow.sdk import AsyncCallback
    except ImportError:  # Airflow 3.1
        from airflow.sdk.definitions.deadline import AsyncCallback

    assert AsyncCallback(VantaxNotifier, kwargs=ALERT).path == PATH


def test_the_trigger_sends_the_alert(
    vantax_conn: str, vantax_emulator: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    events = _run({**ALERT, "context": _context()})
    assert [_state(e) for e in events] == ["running", "success"], events
    [message] = vantax_emulator.messages()
    assert message["body"]["content"] == (
        "nightly is late: run manual__2025-01-02T02:00:00+00:00 is not done by 2025-01-02T03:00:00Z."
    )
    assert vantax_emulator.api_key not in caplog.text


def test_a_repeated_callback_sends_once_and_another_deadline_alerts_again(
    vantax_conn: str, vantax_emulator: Any
) -> None:
    """A triggerer that dies mid-callback runs it again: the key, from the deadline, makes it a replay."""
    for _ in range(2):
        _run({**ALERT, "context": _context()})
    _run({**ALERT, "context": _context(deadline_id="0199a0c4-0000-7000-8000-000000000002")})
    keys = [m["idempotency_key"] for m in vantax_emulator.messages()]
    assert len(keys) == 2 and all(keys) and keys[0] != keys[1], keys
    assert vantax_emulator.stats()["replayed"] == 1


def test_a_failed_send_is_a_failed_callback(vantax_conn: str, vantax_emulator: Any) -> None:
    events = _run({**ALERT, "channel": "sms", "context": _context()})  # sms needs a sender number
    assert _state(events[-1]) == "failed"
    assert "from_phone_number_id" in events[-1]["body"]
    assert vantax_emulator.messages() == []
