"""
Every numeric argument of every operator, sensor, trigger and hook, and every numeric connection
extra, refuses NaN and the infinities with an error that names it (``value <= 0`` is false for NaN,
so a plain range check lets it through).  The table is checked against the signatures, so a new
numeric argument without a case fails here.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reliability._support import figures
from vantax_provider.bulk.engine import send_many
from vantax_provider.emulator.testing import Emulator
from vantax_provider.exceptions import VantaxConfigurationError, VantaxNotFoundError
from vantax_provider.hooks.vantax import VantaxHook
from vantax_provider.notifications.vantax import VantaxNotifier
from vantax_provider.operators.vantax import VantaxSendMessageOperator
from vantax_provider.operators.vantax_bulk import VantaxBulkSendMessageOperator
from vantax_provider.sensors.vantax import VantaxMessageStatusSensor
from vantax_provider.triggers.vantax import VantaxMessagesStatusTrigger, VantaxMessageStatusTrigger

SETTINGS = settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
NON_FINITE = st.one_of(
    st.sampled_from([math.nan, -math.nan, math.inf, -math.inf]),
    st.floats(allow_nan=True, allow_infinity=True).filter(lambda x: not math.isfinite(x)),
    st.integers(min_value=10**400, max_value=10**401),  # a whole number no float can hold
)
FIELDS = {"conversation_id": "c", "channel": "facebook", "content": "hi"}


@dataclass(frozen=True)
class Case:
    """One numeric argument: how to pass it a value, a value it accepts, and the error it raises."""

    target: str
    name: str
    call: Callable[[Any], Any]
    good: Any
    error: type[Exception] = ValueError


def _hook_wait(name: str) -> Callable[[Any], Any]:
    def call(value: Any) -> Any:
        args = {"timeout": 0, "poll_interval": 1.0, name: value}
        return VantaxHook().wait_for_message_status("c", "m", **args)

    return call


def _hook_await(name: str) -> Callable[[Any], Any]:
    def call(value: Any) -> Any:
        args = {"end_time": 0.0, "poll_interval": 1.0, name: value}
        return asyncio.run(VantaxHook().await_message_status("c", "m", **args))

    return call


class _NoLedger:
    def admit(self, item: Any) -> None:
        return None

    def record(self, outcome: Any) -> None:
        pass

    def unsent(self, item: Any) -> None:
        pass

    async def tick(self, progress: Any) -> None:
        pass


def _hook_many(name: str) -> Callable[[Any], Any]:
    async def run(value: Any) -> Any:
        hook = VantaxHook()
        try:
            args: dict[str, Any] = {"max_concurrency": 4, "ahead": 0, "tick_interval": 1.0, name: value}
            return await send_many(hook, [], _NoLedger(), repeat_uncertain=True, **args)
        finally:
            await hook.aclose()

    return lambda value: asyncio.run(run(value))


def _op(cls: type, **fields: Any) -> Callable[[str], Callable[[Any], Any]]:
    return lambda name: lambda value: cls(task_id="t", **fields, **{name: value})


_send = _op(VantaxSendMessageOperator, **FIELDS)
_bulk = _op(VantaxBulkSendMessageOperator, recipients=[], **FIELDS)
_sensor = _op(VantaxMessageStatusSensor, conversation_id="c", message_id="m")
_deferred_sensor = _op(VantaxMessageStatusSensor, conversation_id="c", message_id="m", deferrable=True)


def _trigger(name: str) -> Callable[[Any], Any]:
    return lambda value: VantaxMessageStatusTrigger("c", "m", **{name: value})


def _many(name: str) -> Callable[[Any], Any]:
    return lambda value: VantaxMessagesStatusTrigger([["c", "m"]], **{name: value})


def _hook(name: str) -> Callable[[Any], Any]:
    return lambda value: VantaxHook(**{name: value})


BULK_GOOD = {
    "max_concurrency": 4, "max_uncertain": 64, "rate_limit": 10.5, "max_failure_ratio": 0.5,
    "checkpoint_interval": 1, "progress_interval": 10, "poll_interval": 5, "delivery_timeout": 60,
    "max_listed_outcomes": 10,
}  # fmt: skip
CASES = [
    Case("VantaxSendMessageOperator", "poll_interval", _send("poll_interval"), 5),
    Case("VantaxSendMessageOperator", "delivery_timeout", _send("delivery_timeout"), 60),
    *(Case("VantaxBulkSendMessageOperator", name, _bulk(name), good) for name, good in BULK_GOOD.items()),
    Case("VantaxMessageStatusSensor", "poke_interval", _sensor("poke_interval"), 5),
    Case("VantaxMessageStatusSensor", "timeout", _sensor("timeout"), 60),
    Case("VantaxMessageStatusSensor(deferrable)", "poke_interval", _deferred_sensor("poke_interval"), 5),
    Case("VantaxMessageStatusSensor(deferrable)", "timeout", _deferred_sensor("timeout"), 60),
    *(
        Case(cls.__name__, name, make(name), good)
        for cls, make in [(VantaxMessageStatusTrigger, _trigger), (VantaxMessagesStatusTrigger, _many)]
        for name, good in [("end_time", 1.7e9), ("poll_interval", 5), ("not_before", 1.7e9)]
    ),
    Case("VantaxMessagesStatusTrigger", "max_concurrency", _many("max_concurrency"), 4),
    *(
        Case("VantaxHook", name, _hook(name), good, VantaxConfigurationError)
        for name, good in [("timeout", 30), ("max_retries", 3), ("rate_limit", 10), ("max_connections", 10)]
    ),
    Case("VantaxHook.wait_for_message_status", "timeout", _hook_wait("timeout"), 0),
    Case("VantaxHook.wait_for_message_status", "poll_interval", _hook_wait("poll_interval"), 1),
    Case("VantaxHook.await_message_status", "end_time", _hook_await("end_time"), 0.0),
    Case("VantaxHook.await_message_status", "poll_interval", _hook_await("poll_interval"), 1),
    *(
        Case("bulk.engine.send_many", name, _hook_many(name), good)
        for name, good in [("max_concurrency", 4), ("ahead", 0), ("tick_interval", 1)]
    ),
]
NUMERIC_EXTRAS = [
    "timeout", "connect_timeout", "max_retries", "retry_backoff", "max_retry_after", "max_retry_time",
    "rate_limit", "rate_limit_share",
]  # fmt: skip


def _numeric_parameters(function: Callable[..., Any]) -> set[str]:
    """The parameters annotated with a number type (annotations are strings here)."""
    return {
        name
        for name, p in inspect.signature(function).parameters.items()
        if isinstance(p.annotation, str) and ({"float", "int"} & set(p.annotation.replace("|", " ").split()))
    }


def test_the_table_covers_every_numeric_argument() -> None:
    targets: dict[str, Callable[..., Any]] = {
        cls.__name__: cls.__init__
        for cls in (
            VantaxSendMessageOperator, VantaxBulkSendMessageOperator, VantaxMessageStatusSensor,
            VantaxMessageStatusTrigger, VantaxMessagesStatusTrigger, VantaxHook, VantaxNotifier,
        )
    }  # fmt: skip
    targets["bulk.engine.send_many"] = send_many
    for name, member in inspect.getmembers(VantaxHook, inspect.isfunction):
        if not name.startswith("_") and member.__qualname__.startswith("VantaxHook."):
            targets[f"VantaxHook.{name}"] = member
    covered = {(c.target, c.name) for c in CASES}
    missing = sorted(
        (target, name) for target, f in targets.items() for name in _numeric_parameters(f)
        if (target, name) not in covered
    )  # fmt: skip
    assert missing == [], f"numeric arguments without a case: {missing}"
    # The sensor's own numbers come from BaseSensorOperator (poke_interval, timeout): in the table.
    assert {
        ("VantaxMessageStatusSensor", "poke_interval"),
        ("VantaxMessageStatusSensor", "timeout"),
    } <= covered


@pytest.mark.parametrize("case", CASES, ids=[f"{c.target}.{c.name}" for c in CASES])
@SETTINGS
@given(bad=NON_FINITE)
def test_a_non_finite_number_is_refused_naming_the_argument(
    vantax_emulator: Emulator, fast_conn: Callable[..., str], case: Case, bad: Any
) -> None:
    fast_conn()
    with pytest.raises(case.error) as info:
        case.call(bad)
    assert case.name in str(info.value), str(info.value)
    assert vantax_emulator.requests() == []  # refused before any request
    # The call itself is right: only the number made it fail (a hook's wait reads message "m": 404).
    with contextlib.suppress(VantaxNotFoundError):
        case.call(case.good)
    vantax_emulator.reset()
    figures("bad-numbers").cases += 1


@pytest.mark.parametrize("extra", NUMERIC_EXTRAS)
@SETTINGS
@given(bad=st.sampled_from([math.nan, math.inf, -math.inf, "nan", "inf", "-Infinity"]))
def test_a_non_finite_connection_extra_is_refused_naming_it(
    vantax_emulator: Emulator, fast_conn: Callable[..., str], extra: str, bad: Any
) -> None:
    fast_conn(**{extra: bad})  # JSON holds NaN and Infinity as Python writes them; strings too
    json.loads(json.dumps(bad))
    with pytest.raises(VantaxConfigurationError, match=extra):
        _ = VantaxHook().settings
    figures("bad-numbers").cases += 1
    assert vantax_emulator.requests() == []
