"""The sent-positions checkpoint: size under the 64 KB policy, and what a later try skips."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from vantax_provider.operators._bulk import VantaxBulkSendMessageOperator
from vantax_provider.operators._bulk_support import Bitmap, Checkpoint, fingerprint

POLICY_BYTES = 65_535


@pytest.mark.parametrize("total", [10_000, 1_000_000])
@pytest.mark.parametrize("pattern", ["all", "random"])
def test_each_stored_value_stays_under_64kb(total: int, pattern: str, store: Any) -> None:
    size = (total + 7) // 8
    # Random bits are the worst case for compression; all-sent the best.
    raw = random.Random(7).randbytes(size) if pattern == "random" else b"\xff" * size
    bits = Bitmap(total, raw)
    Checkpoint(store, total, "fp").save(bits.snapshot())

    sizes = [len(json.dumps(json.loads(v))) for v in store.data.values()]
    assert max(sizes) < POLICY_BYTES, sizes
    assert len(store.data) == (1 if total == 10_000 else 3)
    loaded = Checkpoint(store, total, "fp").load()
    assert loaded.count == bits.count and loaded.snapshot() == bits.snapshot()


def test_checkpoint_of_another_list_is_ignored(store: Any) -> None:
    bits = Bitmap(10)
    bits.set(3)
    Checkpoint(store, 10, fingerprint([{"a": 1}])).save(bits.snapshot())
    assert Checkpoint(store, 10, fingerprint([{"a": 1}])).load().count == 1
    assert Checkpoint(store, 10, fingerprint([{"a": 2}])).load().count == 0
    assert Checkpoint(store, 11, fingerprint([{"a": 1}])).load().count == 0
    assert Checkpoint(None, 10, "x").load().count == 0


def _op(recipients: list[dict[str, Any]], **kwargs: Any) -> VantaxBulkSendMessageOperator:
    return VantaxBulkSendMessageOperator(
        task_id="bulk", recipients=recipients, conversation_id="{{ recipient.cid }}", channel="email",
        subject="s", content="Hi {{ recipient.n }}", **kwargs,
    )  # fmt: skip


def test_second_execute_with_the_same_store_sends_nothing(emu, context, store) -> None:  # type: ignore[no-untyped-def]
    """The fast version of crash-resume; the real-Airflow ones are in test_bulk_dag and test_crash_resume."""
    recipients = [{"cid": f"conv_k{i}", "n": i} for i in range(30)]
    first = _op(recipients).execute(context(store))
    assert first["sent"] == 30 and store.writes >= 1
    second = _op(recipients).execute(context(store))
    assert second["skipped_already_sent"] == 30 and second["sent"] == 0
    assert emu.stats()["requests"] == 30 and emu.stats()["created"] == 30
    assert {o["outcome"] for o in second["outcomes"]} == {"skipped_already_sent"}
    assert second["outcomes"][5]["conversation_id"] == "conv_k5"


def test_failed_recipients_are_retried_and_sent_ones_skipped(emu, context, store) -> None:  # type: ignore[no-untyped-def]
    recipients = [{"cid": f"conv_k{i}", "n": i} for i in range(30)]
    emu.inject("status", status=400, method="POST", conversation_id="conv_k7", times=1)
    first = _op(recipients, max_failure_ratio=1.0).execute(context(store))
    assert (first["sent"], first["failed"]) == (29, 1)
    emu.clear_faults()
    second = _op(recipients).execute(context(store))
    assert (second["sent"], second["skipped_already_sent"]) == (1, 29)
    assert emu.stats()["created"] == 30
    assert [m["conversation_id"] for m in emu.messages()].count("conv_k7") == 1
