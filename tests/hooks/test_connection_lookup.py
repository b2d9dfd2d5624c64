"""
The async connection lookup (``hooks._settings.aget_connection``), used by triggers and the bulk engine.

Under ``airflow dags test`` on Airflow 3.3.2 a trigger runs in-process, where Airflow's async
lookup cannot reach the metadata DB and answers "isn't defined" for a connection made with
``airflow connections add``.  The hook then asks the synchronous lookup.  The whole path, as a
user meets it, runs in tests/docs/test_doc_examples.py (the README's first steps); here the
decision itself, with Airflow's async lookup made to miss.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from vantax_provider.hooks._settings import aget_connection
from vantax_provider.hooks.vantax import VantaxHook

KEY = "vx_test_LOOKUP_0123456789"


def _not_found(conn_id: str) -> Exception:
    try:
        from airflow.sdk.exceptions import AirflowNotFoundException
    except ImportError:  # Airflow < 3.2
        from airflow.exceptions import AirflowNotFoundException  # type: ignore[attr-defined,no-redef]
    return AirflowNotFoundException(f"The conn_id `{conn_id}` isn't defined")


@pytest.fixture
def async_lookup_misses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Airflow's async lookup answers "isn't defined" for every id, as under `airflow dags test`."""
    asked: list[str] = []
    compat = pytest.importorskip("airflow.providers.common.compat.connection")

    async def miss(conn_id: str, hook: Any = None) -> Any:
        asked.append(conn_id)
        raise _not_found(conn_id)

    monkeypatch.setattr(compat, "get_async_connection", miss)
    return asked


def test_a_connection_the_async_lookup_misses_is_found_by_the_sync_lookup(
    async_lookup_misses: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = {"conn_type": "vantax", "host": "http://127.0.0.1:8040", "password": KEY}
    monkeypatch.setenv("AIRFLOW_CONN_VANTAX_LOOKUP", json.dumps(conn))
    found = asyncio.run(aget_connection("vantax_lookup", VantaxHook("vantax_lookup")))
    assert async_lookup_misses == ["vantax_lookup"]  # the async lookup was asked first, and missed
    assert found.conn_id == "vantax_lookup" and found.password == KEY and found.host == conn["host"]


def test_a_connection_missing_everywhere_is_still_not_found(async_lookup_misses: list[str]) -> None:
    with pytest.raises(Exception, match=r"vantax_nowhere.* isn't defined") as raised:
        asyncio.run(aget_connection("vantax_nowhere", VantaxHook("vantax_nowhere")))
    assert type(raised.value).__name__ == "AirflowNotFoundException"
    assert async_lookup_misses == ["vantax_nowhere"]


# -- every version of apache-airflow-providers-common-compat -------------------------------------
# ``get_async_connection`` takes ``hook=`` from 1.17.0; 1.8.0 to 1.16.0 have it without (the 1.16
# signature is ``(conn_id: str)``); 1.7.x (the Airflow 3.1 floor's) has no such function.


@pytest.fixture
def common_compat_1_16(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """common-compat's connection module as 1.16.0 shapes it: ``get_async_connection(conn_id)``."""
    import sys
    import types

    from asgiref.sync import sync_to_async

    calls: list[tuple[Any, ...]] = []

    async def get_async_connection(conn_id: str) -> Any:
        from airflow.sdk.bases.hook import BaseHook

        calls.append((conn_id,))
        return await sync_to_async(BaseHook.get_connection)(conn_id=conn_id)

    module = types.ModuleType("airflow.providers.common.compat.connection")
    module.get_async_connection = get_async_connection  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return calls


def test_a_common_compat_without_the_hook_parameter_still_finds_the_connection(
    common_compat_1_16: list[tuple[Any, ...]], monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = {"conn_type": "vantax", "host": "http://127.0.0.1:8040", "password": KEY}
    monkeypatch.setenv("AIRFLOW_CONN_VANTAX_LOOKUP", json.dumps(conn))
    found = asyncio.run(aget_connection("vantax_lookup", VantaxHook("vantax_lookup")))
    assert found.conn_id == "vantax_lookup" and found.password == KEY and found.host == conn["host"]


def test_a_deferred_wait_completes_with_a_common_compat_without_the_hook_parameter(
    common_compat_1_16: list[tuple[Any, ...]], vantax_conn: str, vantax_emulator: Any
) -> None:
    """What a user of Airflow 3.2 with common-compat 1.16 met: the message was sent, the wait failed."""
    from vantax_provider.triggers.vantax import VantaxMessagesStatusTrigger, VantaxMessageStatusTrigger

    hook = VantaxHook(vantax_conn)
    try:
        message_id = hook.send_message("conv_compat", channel="facebook", content="hello").id
    finally:
        hook.close()

    async def first(trigger: Any) -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("the trigger ended without an event")

    one = asyncio.run(first(VantaxMessageStatusTrigger("conv_compat", message_id, poll_interval=0.05)))
    assert (one["status"], one["delivery_status"]) == ("success", "delivered"), one
    many = asyncio.run(first(VantaxMessagesStatusTrigger([["conv_compat", message_id]], poll_interval=0.05)))
    assert many["status"] == "success" and many["counts"]["success"] == 1, many
    gets = [r for r in vantax_emulator.requests() if r["method"] == "GET"]
    assert {r["message_id"] for r in gets} == {message_id}


def test_the_signature_of_common_compats_function_is_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import inspect

    from vantax_provider._compat import async_connection_lookup

    async def with_hook(conn_id: str, hook: Any = None) -> Any: ...
    async def without_hook(conn_id: str) -> Any: ...

    compat = pytest.importorskip("airflow.providers.common.compat.connection")
    read: list[Any] = []
    real_signature = inspect.signature
    monkeypatch.setattr(inspect, "signature", lambda f, *a, **k: read.append(f) or real_signature(f, *a, **k))
    for function, expected in [(with_hook, with_hook), (without_hook, None)]:
        monkeypatch.setattr(compat, "get_async_connection", function)
        assert [async_connection_lookup() for _ in range(3)] == [expected] * 3
    assert read == [with_hook, without_hook]
