"""The hook owns waiting (issue 11): one reading, the sync wait and the async wait, against the emulator."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from vantax_provider.exceptions import VantaxNotFoundError
from vantax_provider.hooks.vantax import VantaxHook
from vantax_provider.status import Outcome


def _sent(hook: VantaxHook, conversation_id: str) -> str:
    return hook.send_message(conversation_id, channel="facebook", content="x").id


def test_one_reading_is_pending_then_success(vantax_conn: str) -> None:
    hook = VantaxHook()
    try:
        message_id = _sent(hook, "conv_r")
        first = hook.check_message_status("conv_r", message_id)
        assert first.outcome is Outcome.PENDING and first.status in ("queued", "sent")
        time.sleep(0.25)
        done = hook.check_message_status("conv_r", message_id)
        assert done.outcome is Outcome.SUCCESS and done.status == "delivered"
        assert done.message is not None and done.message.id == message_id
        assert done.text == f"Vantax message {message_id} is delivered."
        # The user's lists win over the defaults.
        listed = hook.check_message_status("conv_r", message_id, failure_statuses=["DELIVERED"])
        assert listed.outcome is Outcome.FAILURE
        assert listed.text == f"Vantax message {message_id} was not delivered: status 'delivered'."
    finally:
        hook.close()


def test_sync_wait_ends_on_each_outcome(vantax_conn: str, vantax_emulator: Any) -> None:
    vantax_emulator.configure(outcomes={"conv_odd": "read"})
    hook = VantaxHook()
    try:
        ok, failed, stuck, odd = (
            _sent(hook, c) for c in ("conv_w", "conv_fail_w", "conv_stuck_w", "conv_odd")
        )
        check = hook.wait_for_message_status("conv_w", ok, poll_interval=0.05, timeout=10)
        assert check.outcome is Outcome.SUCCESS and check.message is not None and check.message.id == ok
        check = hook.wait_for_message_status("conv_fail_w", failed, poll_interval=0.05, timeout=10)
        assert (check.outcome, check.status) == (Outcome.FAILURE, "failed")
        started = time.monotonic()
        check = hook.wait_for_message_status("conv_stuck_w", stuck, poll_interval=0.05, timeout=0.3)
        assert time.monotonic() - started >= 0.3
        assert check.outcome is Outcome.TIMEOUT and check.status == "sent"
        assert check.text == (
            f"Timed out after 0.3s waiting for Vantax message {stuck} to be delivered; last status 'sent'."
        )
        check = hook.wait_for_message_status("conv_odd", odd, poll_interval=0.05, timeout=10)
        assert check.outcome is Outcome.UNKNOWN and "'read'" in check.text and "failing closed" in check.text
        with pytest.raises(VantaxNotFoundError):  # a permanent error is raised, not polled through
            hook.wait_for_message_status("conv_w", "msg_missing", poll_interval=0.05, timeout=10)
    finally:
        hook.close()
    reads = [r for r in vantax_emulator.requests() if r["method"] == "GET"]
    assert len(reads) >= 4 + 2  # every wait read the API; the stuck one several times


def test_async_wait_reports_errors_and_timeouts_as_outcomes(vantax_conn: str) -> None:
    hook = VantaxHook()
    try:
        ok, stuck = _sent(hook, "conv_a"), _sent(hook, "conv_stuck_a")
    finally:
        hook.close()

    async def waits() -> list[Any]:
        ahook = VantaxHook()
        try:
            soon = time.time() + 0.3
            return [
                await ahook.await_message_status("conv_a", ok, poll_interval=0.05, end_time=time.time() + 10),
                await ahook.await_message_status("conv_stuck_a", stuck, poll_interval=0.05, end_time=soon),
                await ahook.await_message_status("conv_a", "msg_missing", poll_interval=0.05),
            ]
        finally:
            await ahook.aclose()

    delivered, timed_out, missing = asyncio.run(waits())
    assert delivered.outcome is Outcome.SUCCESS and delivered.status == "delivered"
    assert timed_out.outcome is Outcome.TIMEOUT and timed_out.text == (
        f"Timed out waiting for Vantax message {stuck} to be delivered; last status 'sent'."
    )
    assert missing.outcome is Outcome.ERROR and "404" in missing.text and missing.status is None
