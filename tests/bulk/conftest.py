from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.doubles import FakeTI, StateStore

DictStore = StateStore  # the one JSON round-tripping double, under this suite's name


@pytest.fixture
def store() -> DictStore:
    return DictStore()


@pytest.fixture
def context() -> Callable[..., dict[str, Any]]:
    def make(store: DictStore | None = None, **extra: Any) -> dict[str, Any]:
        ctx: dict[str, Any] = {
            "ti": FakeTI(dag_id="bulk_dag", task_id="bulk", run_id="run1"),
            "ds": "2025-01-01",
            "params": {"brand": "Acme"},
            **extra,
        }
        if store is not None:
            ctx["task_state_store"] = store
        return ctx

    return make


@pytest.fixture
def emu(vantax_conn, vantax_emulator):  # type: ignore[no-untyped-def]
    """The reset emulator with ``vantax_default`` pointing at it."""
    return vantax_emulator
