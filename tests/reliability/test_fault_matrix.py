"""
The fault matrix: the single-send operator, the bulk operator and the status sensor (poke mode
and deferrable) under every fault the emulator can inject, once as a passing fault (it hits one
request) and once as a lasting one (it hits every request).

Each case drives the real operator's ``execute`` in-process against the emulator, with fast
retry extras (2 repeats, 10 ms backoff, 0.5 s read timeout), and asserts three things from what
the server saw: the outcome class (derived from the attempts the emulator logged and whether the
task succeeded), how many messages were created for the conversation (never more than one), and
the error text.  The hook's own retry table is tested in tests/hooks; this is the same table seen
through the operators.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.reliability._support import (
    MAX_ATTEMPTS,
    MemoryStateStore,
    attempts,
    created_per_conversation,
    figures,
    make_context,
    outcome_class,
)
from vantax_provider._compat import AirflowFailException
from vantax_provider.emulator.testing import Emulator
from vantax_provider.hooks.vantax import VantaxHook

STALL = 1.0  # seconds: twice the read timeout of the fast connection extras


@dataclass(frozen=True)
class Fault:
    """One injectable fault: the emulator rule, minus its scope and lifetime."""

    name: str
    rule: dict[str, Any]


F: dict[str, Fault] = {
    f.name: f
    for f in [
        Fault("429+retry-after", {"kind": "status", "status": 429, "retry_after": "1"}),
        Fault("429+long-retry-after", {"kind": "status", "status": 429, "retry_after": "120"}),
        *(Fault(f"{s}-before", {"kind": "status", "status": s}) for s in (500, 502, 503, 504)),
        *(
            Fault(f"{s}-after", {"kind": "status", "status": s, "when": "after"})
            for s in (500, 502, 503, 504)
        ),
        Fault("stall", {"kind": "stall", "stall_seconds": STALL}),
        Fault("drop-before", {"kind": "drop"}),
        Fault("drop-after", {"kind": "drop", "when": "after"}),
        Fault("malformed-before", {"kind": "malformed"}),
        Fault("malformed-after", {"kind": "malformed", "when": "after"}),
        Fault("401", {"kind": "status", "status": 401}),
        Fault("422", {"kind": "status", "status": 422}),
    ]
}

OK = "succeeded"
RETRIED_OK = "retried-and-succeeded"
NO_RETRY = "failed-without-retry"
AFTER_RETRIES = "failed-after-retries"

# -- expectations ------------------------------------------------------------------------------
# (fault, lasting, outcome class, messages created, error pattern or None, Airflow may retry the task)
# Sends carry the operator's derived Idempotency-Key, so every failure that may have created the
# message is repeated, and a repeat of a created one is answered from the key (no second message).
SEND_CASES: list[tuple[str, bool, str, int, str | None, bool]] = [
    ("429+retry-after", False, RETRIED_OK, 1, None, False),
    *((f"{s}-before", False, RETRIED_OK, 1, None, False) for s in (500, 502, 503, 504)),
    *((f"{s}-after", False, RETRIED_OK, 1, None, False) for s in (500, 502, 503, 504)),
    ("stall", False, RETRIED_OK, 1, None, False),
    ("drop-before", False, RETRIED_OK, 1, None, False),
    ("drop-after", False, RETRIED_OK, 1, None, False),
    ("malformed-before", False, RETRIED_OK, 1, None, False),
    ("malformed-after", False, RETRIED_OK, 1, None, False),
    ("401", False, NO_RETRY, 0, r"HTTP 401 on POST .*Check the API key", True),
    ("422", False, NO_RETRY, 0, r"HTTP 422 on POST .*messaging window .*closed", False),
    # lasting faults
    ("429+long-retry-after", True, NO_RETRY, 0, r"HTTP 429 on POST|Retry after 120s", True),
    *((f"{s}-before", True, AFTER_RETRIES, 0, rf"HTTP {s} on POST", True) for s in (500, 502, 503, 504)),
    *((f"{s}-after", True, AFTER_RETRIES, 1, rf"HTTP {s} on POST", True) for s in (500, 502, 503, 504)),
    ("stall", True, AFTER_RETRIES, 1, r"timed out: ReadTimeout", True),
    ("drop-before", True, AFTER_RETRIES, 0, r"failed: RemoteProtocolError", True),
    ("drop-after", True, AFTER_RETRIES, 1, r"failed: RemoteProtocolError", True),
    ("malformed-before", True, AFTER_RETRIES, 0, r"HTTP 502 on POST", True),
    (
        "malformed-after",
        True,
        AFTER_RETRIES,
        1,
        r"without the documented JSON envelope.*HTTP 200 on POST",
        True,
    ),
]

# Reads are always safe to repeat; a wait treats 5xx, 429 and transport errors as passing, so a
# lasting one ends in the wait's timeout, while 401 and 422 end the wait at once.
WAIT_CASES: list[tuple[str, bool, str, int, str | None, bool]] = [
    ("429+retry-after", False, RETRIED_OK, 1, None, False),
    *((f"{s}-before", False, RETRIED_OK, 1, None, False) for s in (500, 502, 503, 504)),
    ("500-after", False, RETRIED_OK, 1, None, False),
    ("stall", False, RETRIED_OK, 1, None, False),
    ("drop-before", False, RETRIED_OK, 1, None, False),
    ("drop-after", False, RETRIED_OK, 1, None, False),
    ("malformed-before", False, RETRIED_OK, 1, None, False),
    ("malformed-after", False, RETRIED_OK, 1, None, False),
    ("401", False, NO_RETRY, 1, r"HTTP 401 on GET .*Check the API key", True),
    ("422", False, NO_RETRY, 1, r"HTTP 422 on GET", True),
    ("429+long-retry-after", True, AFTER_RETRIES, 1, r"[Tt]imed out", True),
    ("503-before", True, AFTER_RETRIES, 1, r"[Tt]imed out", True),
    ("504-after", True, AFTER_RETRIES, 1, r"[Tt]imed out", True),
    ("stall", True, AFTER_RETRIES, 1, r"[Tt]imed out", True),
    ("drop-before", True, AFTER_RETRIES, 1, r"[Tt]imed out", True),
    ("malformed-after", True, AFTER_RETRIES, 1, r"[Tt]imed out", True),
]


# Faults after which the message exists although the client saw a failure (an "ambiguous" failure):
# a repeat creates a second message unless the service deduplicates by Idempotency-Key.
AMBIGUOUS = {"500-after", "502-after", "503-after", "504-after", "stall", "drop-after", "malformed-after"}

# The emulator as a service that honours Idempotency-Key (our assumption) and as one that does not.
MODES = [pytest.param(True, id="dedup"), pytest.param(False, id="no-dedup")]

# The bulk result flags a failed recipient whose message may exist (``maybe_sent``). A 503 is the
# exception by contract: the provider assumes a 503 never created the message
# (``contract.POST_NOT_CREATED``, docs/api-assumptions.md), so one created anyway is not flagged.
NOT_FLAGGED_MAYBE_SENT = {"503-after"}


def _created_without_dedup(name: str, lasting: bool, created: int) -> int:
    """Without deduplication every attempt after an ambiguous failure creates one more message."""
    if name not in AMBIGUOUS:
        return created
    return MAX_ATTEMPTS if lasting else 2


def _bulk_cases() -> list[Any]:
    out = []
    for case, case_id in zip(SEND_CASES, _ids(SEND_CASES), strict=True):
        marks = []
        if case[1] and case[0] in NOT_FLAGGED_MAYBE_SENT:
            marks.append(
                pytest.mark.xfail(
                    strict=True,
                    reason="a 503 is assumed not to have created the message (contract.POST_NOT_CREATED)",
                )
            )
        out.append(pytest.param(*case, id=case_id, marks=marks))
    return out


def _ids(cases: list[tuple[str, bool, str, int, str | None, bool]]) -> list[str]:
    return [f"{c[0]}-{'lasting' if c[1] else 'once'}" for c in cases]


@dataclass
class Observed:
    ok: bool
    error: BaseException | None
    tries: int
    created: int
    others_created: dict[str, int]
    lasting: bool = False


def lasting_of(observed: Observed) -> bool:
    return observed.lasting


def _inject(emu: Emulator, fault: Fault, lasting: bool, method: str, conversation_id: str) -> None:
    if fault.name == "422" and method == "POST":
        # The real thing rather than an injected status: the window of this conversation is closed.
        emu.configure(closed_windows=[conversation_id])
        return
    emu.inject(**fault.rule, method=method, conversation_id=conversation_id, times=None if lasting else 1)


def _run(fn: Callable[[], Any]) -> tuple[bool, BaseException | None]:
    try:
        fn()
    except Exception as exc:  # the outcome under test
        return False, exc
    return True, None


def _check(
    suite: str,
    observed: Observed,
    fault: Fault,
    expected_class: str,
    expected_created: int,
    pattern: str | None,
    airflow_may_retry: bool,
    emu: Emulator,
    dedup: bool = True,
) -> None:
    f = figures(suite if dedup else suite + "/no-dedup")
    f.cases += 1
    hits = sum(rule["hits"] for rule in emu.faults())
    f.faults_applied += hits + (fault.name == "422")
    counts = created_per_conversation(emu)
    duplicates = sum(max(0, n - 1) for n in counts.values())
    f.duplicates += duplicates
    got_class = outcome_class(observed.ok, observed.tries)
    assert got_class == expected_class, (
        f"{fault.name}: {got_class} after {observed.tries} attempts: {observed.error!r}"
    )
    if dedup:
        assert observed.created == expected_created
        assert all(n <= 1 for n in counts.values()), f"a message was created twice: {dict(counts)}"
    else:
        # Without the service's help: exactly one extra message per repeat after an ambiguous
        # failure, and never more duplicates than ambiguous failures were injected.
        ambiguous = hits if fault.name in AMBIGUOUS else 0
        f.extra["ambiguous"] = f.extra.get("ambiguous", 0) + ambiguous
        assert observed.created == _created_without_dedup(fault.name, lasting_of(observed), expected_created)
        assert duplicates <= ambiguous, (dict(counts), ambiguous)
    assert all(n == 1 for n in observed.others_created.values()), observed.others_created
    if pattern is None:
        assert observed.error is None
    else:
        assert observed.error is not None
        assert re.search(pattern, str(observed.error), re.S), str(observed.error)
        assert (not isinstance(observed.error, AirflowFailException)) == airflow_may_retry, repr(
            observed.error
        )
    if observed.ok:
        f.survived += 1


def _wait_out_stalls(fault: Fault) -> None:
    # A stalled request is logged (and, before, processed) only when its sleep ends.
    if fault.rule["kind"] == "stall":
        time.sleep(STALL + 0.3)


# -- the single-send operator -------------------------------------------------------------------


@pytest.mark.parametrize("dedup", MODES)
@pytest.mark.parametrize(
    ("name", "lasting", "klass", "created", "pattern", "retry"), SEND_CASES, ids=_ids(SEND_CASES)
)
def test_single_send(
    vantax_emulator: Emulator, fast_conn: Callable[..., str],
    name: str, lasting: bool, klass: str, created: int, pattern: str | None, retry: bool, dedup: bool,
) -> None:  # fmt: skip
    from vantax_provider.operators.vantax import VantaxSendMessageOperator

    fast_conn()
    emu, fault, conv = vantax_emulator, F[name], f"conv_single_{name}"
    emu.configure(deduplicate=dedup)
    _inject(emu, fault, lasting, "POST", conv)
    op = VantaxSendMessageOperator(task_id="send", conversation_id=conv, channel="facebook", content="Hello")
    context = make_context("send", store=MemoryStateStore())
    ok, error = _run(lambda: op.execute(context))
    _wait_out_stalls(fault)
    if ok:  # the message the task reports is one the server created (the only one, with dedup)
        assert context["ti"].xcoms["message_id"] in [m["id"] for m in emu.messages()]
    observed = Observed(
        ok, error, attempts(emu, conv, "POST"), created_per_conversation(emu)[conv], {}, lasting
    )
    _check("fault-matrix/single-send", observed, fault, klass, created, pattern, retry, emu, dedup)


# -- the bulk operator --------------------------------------------------------------------------


@pytest.mark.parametrize("dedup", MODES)
@pytest.mark.parametrize(("name", "lasting", "klass", "created", "pattern", "retry"), _bulk_cases())
def test_bulk_send(
    vantax_emulator: Emulator, fast_conn: Callable[..., str],
    name: str, lasting: bool, klass: str, created: int, pattern: str | None, retry: bool, dedup: bool,
) -> None:  # fmt: skip
    from vantax_provider.operators.vantax_bulk import VantaxBulkSendMessageOperator

    fast_conn()
    emu, fault = vantax_emulator, F[name]
    emu.configure(deduplicate=dedup)
    victim = f"conv_bulk_{name}"
    recipients = [{"conv": f"conv_bystander_{i}", "name": f"n{i}"} for i in range(4)]
    recipients.insert(2, {"conv": victim, "name": "victim"})
    _inject(emu, fault, lasting, "POST", victim)
    op = VantaxBulkSendMessageOperator(
        task_id="bulk", recipients=recipients, conversation_id="{{ recipient.conv }}",
        channel="facebook", content="Hello {{ recipient.name }}", max_concurrency=4,
    )  # fmt: skip
    context = make_context("bulk", store=MemoryStateStore())
    result: dict[str, Any] = {}
    ok, error = _run(lambda: result.update(op.execute(context)))
    _wait_out_stalls(fault)
    counts = created_per_conversation(emu)
    others = {r["conv"]: counts[r["conv"]] for r in recipients if r["conv"] != victim}
    if ok:
        assert result["sent"] == 5 and result["failed"] == 0
    elif name == "401":
        # A refused key stops the batch at the first refusal, without a retry: the bystanders in
        # flight then are sent, the others are not, and nobody is sent twice.
        assert "refused the API key" in str(error)
        failed = context["ti"].xcoms["vantax_bulk_result"]
        assert failed["failed"] == 1 and failed["sent"] == sum(others.values())
        assert all(n <= 1 for n in others.values()), others
        others = {conv: n for conv, n in others.items() if n}
    else:
        # The whole batch ran: the failure is reported per recipient and in the task's error.
        failed = context["ti"].xcoms["vantax_bulk_result"]
        [outcome] = [o for o in failed["outcomes"] if o["outcome"] == "failed"]
        assert outcome["conversation_id"] == victim
        assert "1 of 5 Vantax recipients failed" in str(error)
        # A failed recipient whose message exists on the server is flagged as possibly sent.
        if counts[victim] > 0:
            assert outcome.get("maybe_sent") is True, (outcome, counts[victim])
    # A batch fails by its failure policy with a retryable error whatever the recipients' reasons
    # (a retry re-sends only the unsent ones), so a closed window does not stop Airflow's retry;
    # a refused key does, since every recipient would be refused.
    retry = (retry or name == "422") and name != "401"
    observed = Observed(ok, error, attempts(emu, victim, "POST"), counts[victim], others, lasting)
    _check("fault-matrix/bulk-send", observed, fault, klass, created, pattern, retry, emu, dedup)


# -- the status sensor --------------------------------------------------------------------------


def _sent_message(emu: Emulator, conversation_id: str) -> str:
    hook = VantaxHook()
    try:
        return hook.send_message(conversation_id, channel="facebook", content="Hello").id
    finally:
        hook.close()


@pytest.mark.parametrize(
    ("name", "lasting", "klass", "created", "pattern", "retry"), WAIT_CASES, ids=_ids(WAIT_CASES)
)
def test_sensor_poke(
    vantax_emulator: Emulator, fast_conn: Callable[..., str],
    name: str, lasting: bool, klass: str, created: int, pattern: str | None, retry: bool,
) -> None:  # fmt: skip
    from vantax_provider.sensors.vantax import VantaxMessageStatusSensor

    fast_conn()
    emu, fault, conv = vantax_emulator, F[name], f"conv_sensor_{name}"
    message_id = _sent_message(emu, conv)
    _inject(emu, fault, lasting, "GET", conv)
    sensor = VantaxMessageStatusSensor(
        task_id="wait", conversation_id=conv, message_id=message_id, poke_interval=0.1, timeout=1.0,
        mode="poke", deferrable=False,
    )  # fmt: skip
    result: list[Any] = []
    ok, error = _run(lambda: result.append(sensor.execute(make_context("wait"))))
    _wait_out_stalls(fault)
    if ok:
        assert result[0]["status"] == "delivered"
    observed = Observed(ok, error, attempts(emu, conv, "GET"), created_per_conversation(emu)[conv], {})
    _check("fault-matrix/sensor-poke", observed, fault, klass, created, pattern, retry, emu)


@pytest.mark.parametrize(
    ("name", "lasting", "klass", "created", "pattern", "retry"), WAIT_CASES, ids=_ids(WAIT_CASES)
)
def test_sensor_deferrable(
    vantax_emulator: Emulator, fast_conn: Callable[..., str],
    name: str, lasting: bool, klass: str, created: int, pattern: str | None, retry: bool,
) -> None:  # fmt: skip
    try:
        from airflow.sdk.exceptions import TaskDeferred
    except ImportError:  # Airflow < 3.3
        from airflow.exceptions import TaskDeferred  # type: ignore[no-redef,attr-defined]

    from vantax_provider.sensors.vantax import VantaxMessageStatusSensor

    fast_conn()
    emu, fault, conv = vantax_emulator, F[name], f"conv_deferred_{name}"
    emu.configure(queued_seconds=0.3)  # still queued at the first poke, so the sensor defers
    message_id = _sent_message(emu, conv)
    sensor = VantaxMessageStatusSensor(
        task_id="wait", conversation_id=conv, message_id=message_id, poke_interval=0.1, timeout=1.0,
        deferrable=True,
    )  # fmt: skip
    context = make_context("wait")
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(context)
    before = attempts(emu, conv, "GET")
    _inject(emu, fault, lasting, "GET", conv)
    trigger = deferred.value.trigger

    async def first_event() -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("the trigger ended without an event")

    event = asyncio.run(first_event())
    _wait_out_stalls(fault)
    tries = attempts(emu, conv, "GET") - before
    result: list[Any] = []
    ok, error = _run(lambda: result.append(sensor.execute_complete(context, event)))
    if ok:
        assert result[0]["status"] == "delivered"
    observed = Observed(ok, error, tries, created_per_conversation(emu)[conv], {})
    _check("fault-matrix/sensor-deferrable", observed, fault, klass, created, pattern, retry, emu)
