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
