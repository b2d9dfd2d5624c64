"""
The bulk journal: identities instead of list positions, the write-ahead, stored value sizes,
and what a later try skips.  Against a service that does not deduplicate
(``deduplicate=False``), so what is counted is what the provider prevents on its own.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from typing import Any

import pytest

from tests.doubles import StateStore
from vantax_provider.bulk.journal import (
    HEAD_BYTES,
    HEAD_KEY,
    MAX_WINDOW,
    SEGMENT_BYTES,
    Journal,
    identity,
    unpack,
)
from vantax_provider.operators.vantax_bulk import VantaxBulkSendMessageOperator, read_report

POLICY_BYTES = 65_535


def _op(recipients: list[dict[str, Any]], **kwargs: Any) -> VantaxBulkSendMessageOperator:
    return VantaxBulkSendMessageOperator(
        task_id="bulk", recipients=recipients, conversation_id="{{ recipient.cid }}", channel="email",
        subject="s", content="Hi {{ recipient.n }}", **kwargs,
    )  # fmt: skip


def _rows(n: int, prefix: str = "conv_k") -> list[dict[str, Any]]:
    return [{"cid": f"{prefix}{i}", "n": i} for i in range(n)]


def _created(emu: Any) -> Counter[str]:
    return Counter(m["conversation_id"] for m in emu.messages())


@pytest.fixture
def nodedup(emu):  # type: ignore[no-untyped-def]
    emu.configure(deduplicate=False)
    return emu


def _message(n: int) -> list[str]:
    """A created message's ids; conversation ids are user strings, some long and far from ASCII."""
    if n % 97 == 0:
        return ["conv_" + "\U0001d11e" * 251, f"msg_{n:024d}"]  # 12 bytes each once escaped in JSON
    return [f"conv_{n}", f"msg_{n:024d}"]


@pytest.mark.parametrize("total", [10_000, 100_000])
def test_each_stored_value_stays_under_64kb_and_reads_back(total: int, store: Any) -> None:
    rng = random.Random(7)
    ids = [rng.getrandbits(64) for _ in range(total)]
    in_flight = set(range(1, MAX_WINDOW + 1))  # a full window of requests in flight at the last write

    async def write() -> Journal:
        journal = Journal(store, window=MAX_WINDOW, interval=60)
        journal.start()
        for n, i in enumerate(ids):
            journal.intent.add(i)
            sent = i % 3 != 0
            journal.finished(i, sent=sent, maybe=not sent, message=_message(n) if sent else None)
            # 10,000: one write at the end (as after a long store outage) must still split into segments.
            if total > 10_000 and journal.entry_bytes >= SEGMENT_BYTES:
                await journal.flush()
        journal.intent.update(in_flight)
        await journal.close()
        return journal

    asyncio.run(write())
    sizes = [len(json.dumps(json.loads(v))) for v in store.data.values()]
    assert max(sizes) <= HEAD_BYTES + 200 < POLICY_BYTES, max(sizes)
    segments = [n for key, n in zip(store.data, sizes, strict=True) if key != HEAD_KEY]
    assert min(segments) > SEGMENT_BYTES // 2  # a segment is written once per ~16 KB, not per message
    later = Journal(store, window=64, interval=60, keep_messages=True)
    later.load()
    assert later.prior_done == {i for i in ids if i % 3 != 0}
    assert later.prior_maybe == {i for i in ids if i % 3 == 0}
    assert later.prior_uncertain == in_flight
    assert later.prior_messages == {i: _message(n) for n, i in enumerate(ids) if i % 3 != 0}


def test_second_execute_with_the_same_store_sends_nothing(nodedup, context, store) -> None:  # type: ignore[no-untyped-def]
    """The fast crash-resume; the real-Airflow ones are in test_crash_resume and tests/reliability."""
    recipients = _rows(30)
    first = _op(recipients).execute(context(store))
    assert first["sent"] == 30 and store.writes >= 1
    second = _op(recipients).execute(context(store))
    assert second["skipped_already_sent"] == 30 and second["sent"] == 0
    assert nodedup.stats()["requests"] == 30 and nodedup.stats()["created"] == 30
    rows = list(read_report(second["report"]))
    assert {o["outcome"] for o in rows} == {"skipped_already_sent"} and second["outcomes"] == []
    assert rows[5]["conversation_id"] == "conv_k5"


def test_failed_recipients_are_retried_and_sent_ones_skipped(nodedup, context, store) -> None:  # type: ignore[no-untyped-def]
    recipients = _rows(30)
    nodedup.inject("status", status=400, method="POST", conversation_id="conv_k7", times=1)
    first = _op(recipients, max_failure_ratio=1.0).execute(context(store))
    assert (first["sent"], first["failed"]) == (29, 1)
    nodedup.clear_faults()
    second = _op(recipients).execute(context(store))
    assert (second["sent"], second["skipped_already_sent"]) == (1, 29)
    assert _created(nodedup)["conv_k7"] == 1 and nodedup.stats()["created"] == 30


@pytest.mark.parametrize("change", ["insert_at_top", "delete_first", "reverse", "shuffle"])
def test_a_changed_list_on_the_retry_sends_nobody_twice(nodedup, context, store, change: str) -> None:  # type: ignore[no-untyped-def]
    """Issue 9 item 4: the old checkpoint and keys followed positions, so a changed list re-sent people."""
    recipients = _rows(40)
    _op(recipients[:25]).execute(context(store))  # the first try got through 25
    changed = list(recipients)
    if change == "insert_at_top":
        changed.insert(0, {"cid": "conv_new", "n": 999})
    elif change == "delete_first":
        del changed[0]
    elif change == "reverse":
        changed.reverse()
    else:
        random.Random(3).shuffle(changed)
    second = _op(changed).execute(context(store))
    created = _created(nodedup)
    assert set(created.values()) == {1}, [c for c, n in created.items() if n > 1]
    expected_new = {r["cid"] for r in changed} - {r["cid"] for r in recipients[:25]}
    assert second["sent"] == len(expected_new)
    assert second["skipped_already_sent"] == len(changed) - len(expected_new)


def test_a_repeated_row_is_a_duplicate_and_sent_once(nodedup, context, store) -> None:  # type: ignore[no-untyped-def]
    recipients = _rows(5)
    recipients.insert(3, dict(recipients[1]))  # the same conversation and body again
    recipients.append({"cid": "conv_k1", "n": 77})  # same conversation, other body: a message of its own
    result = _op(recipients).execute(context(store))
    assert (result["sent"], result["duplicate"]) == (6, 1)
    dup = list(read_report(result["report"]))[3]
    assert dup["outcome"] == "duplicate" and dup["duplicate_of"] == 1 and dup["conversation_id"] == "conv_k1"
    assert _created(nodedup)["conv_k1"] == 2 and nodedup.stats()["created"] == 6


def test_own_keys_from_a_recipient_field(nodedup, context, store) -> None:  # type: ignore[no-untyped-def]
    recipients = [{"cid": f"conv_o{i}", "n": i, "key": f"crm-{i}"} for i in range(4)]
    recipients.append({"cid": "conv_o9", "n": 9})  # no key
    recipients.append({"cid": "conv_o0", "n": 0, "key": "crm-0"})  # same key, same message
    recipients.append({"cid": "conv_o7", "n": 7, "key": "crm-1"})  # same key, another message
    result = _op(recipients, idempotency_key_field="key", max_failure_ratio=1.0).execute(context(store))
    assert (result["sent"], result["duplicate"], result["invalid"]) == (4, 1, 2)
    keys = sorted(m["idempotency_key"] for m in nodedup.messages())
    assert keys == ["crm-0", "crm-1", "crm-2", "crm-3"]
    errors = {o["index"]: o.get("error", "") for o in result["outcomes"]}
    assert "key: the recipient's Idempotency-Key is missing" in errors[4]
    assert "same key as recipient #1" in errors[6]
    again = _op(recipients, idempotency_key_field="key", max_failure_ratio=1.0).execute(context(store))
    assert again["skipped_already_sent"] == 4 and nodedup.stats()["created"] == 4


def test_no_request_starts_before_the_journal_records_it(nodedup, context, store, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Issue 14: the write-ahead. At each POST its identity is already in the stored intent."""
    from vantax_provider.hooks.vantax import VantaxHook

    seen: list[bool] = []
    original = VantaxHook.asend_request

    async def check(self: VantaxHook, request: Any, *, idempotency_key: Any = None, **kw: Any) -> Any:
        head = store.get(HEAD_KEY)
        seen.append(identity(idempotency_key) in set(unpack(head["intent"])))
        return await original(self, request, idempotency_key=idempotency_key, **kw)

    monkeypatch.setattr(VantaxHook, "asend_request", check)
    nodedup.configure(latency_ms=5)
    result = _op(_rows(200), max_concurrency=8).execute(context(store))
    assert result["sent"] == 200 and len(seen) == 200 and all(seen)
    head = store.get(HEAD_KEY)
    assert unpack(head["intent"]) == []  # nothing left in flight at the end


class SlowStore(StateStore):
    """A state store whose writes take longer than the service's answers (as on a busy API server)."""

    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        time.sleep(0.03)
        super().set(key, value)


@pytest.mark.parametrize("max_uncertain", [None, 12])
def test_max_uncertain_bounds_what_the_journal_lists(nodedup, context, monkeypatch, max_uncertain) -> None:  # type: ignore[no-untyped-def]
    """
    At most ``max_uncertain`` (default ``max_concurrency``) unfinished messages are ever in the
    stored intent, each POST is listed before it starts, and no more than ``max_concurrency``
    requests are open; a larger ``max_uncertain`` really lists the next messages ahead.
    """
    from vantax_provider.hooks.vantax import VantaxHook

    store = SlowStore()
    listed: list[bool] = []
    open_now = most_open = 0
    original = VantaxHook.asend_request

    async def check(self: VantaxHook, request: Any, *, idempotency_key: Any = None, **kw: Any) -> Any:
        nonlocal open_now, most_open
        listed.append(identity(idempotency_key) in set(unpack(store.get(HEAD_KEY)["intent"])))
        open_now += 1
        most_open = max(most_open, open_now)
        try:
            return await original(self, request, idempotency_key=idempotency_key, **kw)
        finally:
            open_now -= 1

    monkeypatch.setattr(VantaxHook, "asend_request", check)
    nodedup.configure(latency_ms=10)
    op = _op(_rows(120), max_concurrency=4, max_uncertain=max_uncertain)
    result = op.execute(context(store))
    assert result["sent"] == 120 and len(listed) == 120 and all(listed)
    assert most_open <= 4
    sizes = [len(unpack(value["intent"])) for value in store.history if "intent" in value]
    assert max(sizes) <= op.max_uncertain == (max_uncertain or 4)
    if max_uncertain is not None:
        assert max(sizes) > 4, sizes  # listed ahead of the requests in flight
    assert sizes[-1] == 0
    created = _created(nodedup)
    assert len(created) == 120 and max(created.values()) == 1


def test_an_error_leaves_only_started_requests_uncertain(nodedup, context, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """
    An unexpected error stops the batch while messages are listed ahead: those whose request never
    started are recorded as not sent, so the retry sends them instead of calling them maybe_sent.
    """
    from vantax_provider.bulk.render import Renderer
    from vantax_provider.hooks.vantax import VantaxHook

    store = SlowStore()
    started: set[int] = set()
    send, render = VantaxHook.asend_request, Renderer.render

    async def counted(self: VantaxHook, request: Any, *, idempotency_key: Any = None, **kw: Any) -> Any:
        started.add(identity(idempotency_key))
        return await send(self, request, idempotency_key=idempotency_key, **kw)

    def breaking(self: Renderer, recipient: Any) -> Any:
        if recipient["n"] == 30:
            raise RuntimeError("a bug in a template filter")
        return render(self, recipient)

    monkeypatch.setattr(VantaxHook, "asend_request", counted)
    monkeypatch.setattr(Renderer, "render", breaking)
    nodedup.configure(latency_ms=40)
    with pytest.raises(RuntimeError, match="template filter"):
        _op(_rows(60), max_concurrency=2, max_uncertain=12).execute(context(store))
    intent = set(unpack(store.get(HEAD_KEY)["intent"]))
    assert intent <= started, f"{len(intent - started)} never-started messages left uncertain"
    monkeypatch.setattr(Renderer, "render", render)
    retry = _op(_rows(60), max_concurrency=2, max_uncertain=12, on_uncertain="skip").execute(context(store))
    assert retry["maybe_sent"] == len(intent)
    assert retry["sent"] + retry["skipped_already_sent"] + retry["maybe_sent"] == 60
    maybe = {o["conversation_id"] for o in retry["outcomes"] if o["outcome"] == "maybe_sent"}
    created = _created(nodedup)
    assert max(created.values()) == 1  # nobody twice
    assert {f"conv_k{i}" for i in range(60)} - maybe <= set(created)  # everyone else once


@pytest.mark.parametrize("value", [3, 4097, True, 8.0, "8"])
def test_max_uncertain_is_checked(value: Any) -> None:
    with pytest.raises(ValueError, match=r"max_uncertain must be None or between max_concurrency \(4\)"):
        _op(_rows(1), max_concurrency=4, max_uncertain=value)


class FlakyStore:
    """A state store whose set() fails on chosen calls (a blip of the API server)."""

    def __init__(self, inner: Any, fail_calls: set[int]) -> None:
        self.inner, self.fail_calls, self.calls = inner, fail_calls, 0

    def get(self, key: str, default: Any = None) -> Any:
        return self.inner.get(key, default)

    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        self.calls += 1
        if self.calls in self.fail_calls:
            raise ConnectionError("state store unavailable")
        self.inner.set(key, value)

    def delete(self, key: str) -> None:
        self.inner.delete(key)


def test_one_failed_write_does_not_end_the_journal(nodedup, context, store, caplog) -> None:  # type: ignore[no-untyped-def]
    """Issue 9 item 5: one set() that raised killed the ticker; the task failed, the retry re-sent all."""
    nodedup.configure(latency_ms=5)
    flaky = FlakyStore(store, fail_calls={2})
    result = _op(_rows(60), max_concurrency=4, checkpoint_interval=0.05).execute(context(flaky))
    assert result["sent"] == 60 and flaky.calls > 2
    assert "Writing the bulk journal to the task state store failed" in caplog.text
    again = _op(_rows(60)).execute(context(store))
    assert again["skipped_already_sent"] == 60 and nodedup.stats()["created"] == 60


def test_while_writes_fail_no_request_starts_without_a_stored_intent(
    nodedup, context, store, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """Writes 2 to 6 fail: the requests wait for a write that lists them (none goes out unrecorded)."""
    from vantax_provider.bulk import journal as _bulk_journal
    from vantax_provider.hooks.vantax import VantaxHook

    monkeypatch.setattr(_bulk_journal, "STORE_BACKOFF", 0.01, raising=False)
    listed: list[bool] = []
    original = VantaxHook.asend_request

    async def check(self: VantaxHook, request: Any, *, idempotency_key: Any = None, **kw: Any) -> Any:
        head = store.get(HEAD_KEY) or {"intent": ""}
        listed.append(identity(idempotency_key) in set(unpack(head["intent"])))
        return await original(self, request, idempotency_key=idempotency_key, **kw)

    monkeypatch.setattr(VantaxHook, "asend_request", check)
    nodedup.configure(latency_ms=5)
    flaky = FlakyStore(store, fail_calls={2, 3, 4, 5, 6})
    result = _op(_rows(60), max_concurrency=4, checkpoint_interval=0.05).execute(context(flaky))
    assert result["sent"] == 60 and len(listed) == 60
    assert all(listed), f"{listed.count(False)} requests started without a stored intent"
    again = _op(_rows(60)).execute(context(store))
    assert again["skipped_already_sent"] == 60 and nodedup.stats()["created"] == 60


def test_the_final_write_is_tried_again_after_the_last_send(nodedup, context, store, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The write that records the last sends fails twice; tried again with backoff, it gets through."""
    from vantax_provider.bulk import journal as _bulk_journal

    monkeypatch.setattr(_bulk_journal, "STORE_BACKOFF", 0.01)

    class FailsAtTheEnd:
        def __init__(self) -> None:
            self.final_attempts = 0

        def get(self, key: str, default: Any = None) -> Any:
            return store.get(key, default)

        def set(self, key: str, value: Any, *, retention: Any = None) -> None:
            if not unpack(value["intent"]) and len(unpack(value["done"])) == 20:
                self.final_attempts += 1
                if self.final_attempts <= 2:
                    raise TimeoutError("state store too slow")
            store.set(key, value)

    flaky = FailsAtTheEnd()
    result = _op(_rows(20), max_concurrency=4).execute(context(flaky))
    assert result["sent"] == 20 and flaky.final_attempts == 3
    assert _op(_rows(20)).execute(context(store))["skipped_already_sent"] == 20
    assert nodedup.stats()["created"] == 20


def test_a_journal_written_before_message_ids_were_kept_is_still_read(store) -> None:  # type: ignore[no-untyped-def]
    """A version-1 head (identities only): what it records is skipped; its messages are unknown."""
    from vantax_provider.bulk.journal import pack

    done, maybe = [identity("a"), identity("b")], [identity("c")]
    store.set(HEAD_KEY, {"v": 1, "sealed": 0, "done": pack(done), "maybe": pack(maybe), "intent": ""})
    journal = Journal(store, window=8, interval=60, keep_messages=True)
    journal.load()
    assert journal.prior_done == set(done) and journal.prior_maybe == set(maybe)
    assert journal.prior_messages == {} and journal.head_messages == [None, None]

    async def rewrite() -> None:  # this try's first write carries them over, now in version 2
        journal.start()
        journal.finished(identity("d"), sent=True, message=["conv_d", "msg_d"])
        await journal.close()

    asyncio.run(rewrite())
    head = store.get(HEAD_KEY)
    assert head["v"] == 2 and unpack(head["done"]) == [*done, identity("d")]
    assert head["messages"] == [None, None, ["conv_d", "msg_d"]]
