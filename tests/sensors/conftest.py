from __future__ import annotations

import json
from collections.abc import Callable

import pytest


@pytest.fixture
def dag_env(airflow_db, vantax_conn, vantax_emulator):  # type: ignore[no-untyped-def]
    """A migrated DB and ``vantax_default`` pointing at a freshly reset emulator; returns the emulator."""
    return vantax_emulator


@pytest.fixture
def conn_extra(vantax_emulator, monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Re-point ``vantax_default`` at the emulator with connection extras (e.g. max_retries=0)."""

    def apply(**extra: object) -> None:
        conn = json.loads(vantax_emulator.connection_json())
        conn["extra"] = extra
        monkeypatch.setenv("AIRFLOW_CONN_VANTAX_DEFAULT", json.dumps(conn))

    return apply
