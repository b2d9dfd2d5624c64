from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest


class FakeTI:
    """The few task-instance attributes the operator reads, for tests that call ``execute`` directly."""

    def __init__(
        self, dag_id: str = "bulk_dag", task_id: str = "bulk", run_id: str = "run1", map_index: int = -1
    ):
        self.dag_id, self.task_id, self.run_id, self.map_index = dag_id, task_id, run_id, map_index
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value


class DictStore:
    """A dict standing in for ``task_state_store`` where a test needs no real Airflow run."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.writes = 0

    def get(self, key: str, default: Any = None) -> Any:
        return json.loads(self.data[key]) if key in self.data else default

    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        self.data[key] = json.dumps(value)  # as the real store: JSON in, JSON out
        self.writes += 1

    def delete(self, key: str) -> None:
        self.data.pop(key, None)


@pytest.fixture
def store() -> DictStore:
    return DictStore()


@pytest.fixture
def context() -> Callable[..., dict[str, Any]]:
    def make(store: DictStore | None = None, **extra: Any) -> dict[str, Any]:
        ctx: dict[str, Any] = {"ti": FakeTI(), "ds": "2025-01-01", "params": {"brand": "Acme"}, **extra}
        if store is not None:
            ctx["task_state_store"] = store
        return ctx

    return make


@pytest.fixture
def emu(vantax_conn, vantax_emulator):  # type: ignore[no-untyped-def]
    """The reset emulator with ``vantax_default`` pointing at it."""
    return vantax_emulator
