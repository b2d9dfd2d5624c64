"""
The test doubles shared by every suite that calls an operator's ``execute`` directly: one task
instance and one ``task_state_store``. Tests that need the real thing run a DAG instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FakeTI:
    """The task-instance attributes the operators read, with XCom pushes recorded in ``xcoms``."""

    dag_id: str = "test_dag"
    task_id: str = "send"
    run_id: str = "manual__1"
    map_index: int = -1
    try_number: int = 1
    max_tries: int = 0
    xcoms: dict[str, Any] = field(default_factory=dict)

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value

    def xcom_pull(self, task_ids: str, key: str, map_indexes: int | None = None) -> Any:
        """This task instance's own pushes only (what a resumed task reads back)."""
        assert (task_ids, map_indexes) == (self.task_id, self.map_index), (task_ids, map_indexes)
        return self.xcoms.get(key)


class StateStore:
    """
    Airflow 3.3's ``task_state_store`` for one task instance: values go in and come out as JSON,
    as in the real store, so a value that would not survive the database does not survive here.
    """

    def __init__(self, *, keep_history: bool = True) -> None:
        self.data: dict[str, str] = {}
        self.writes = 0
        # Every value written, in order, as the store returns it; a memory measurement turns it
        # off, since a real store keeps only the current values.
        self.keep_history = keep_history
        self.history: list[Any] = []

    def get(self, key: str, default: Any = None) -> Any:
        return json.loads(self.data[key]) if key in self.data else default

    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        self.data[key] = json.dumps(value)
        self.writes += 1
        if self.keep_history:
            self.history.append(json.loads(self.data[key]))

    def delete(self, key: str) -> None:
        self.data.pop(key, None)

    @property
    def values(self) -> dict[str, Any]:
        """What the store holds now, decoded."""
        return {key: json.loads(raw) for key, raw in self.data.items()}


class XComSupervisor:
    """
    Answers ``GetXCom`` from the values a ``FakeTI`` pushed, as the triggerer's supervisor does; install
    it with ``monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", XComSupervisor(ti), raising=False)``.
    Values go through Airflow's own XCom serialisation; ``requests`` records the ``GetXCom`` asked.
    Other messages (``MaskSecret``) are accepted and dropped.
    """

    def __init__(self, ti: FakeTI) -> None:
        self.ti = ti
        self.requests: list[Any] = []

    def send(self, msg: Any) -> Any:
        from airflow.sdk.bases.xcom import BaseXCom
        from airflow.sdk.execution_time.comms import XComResult

        if type(msg).__name__ != "GetXCom":
            return None
        self.requests.append(msg)
        own = (msg.dag_id, msg.task_id, msg.run_id, msg.map_index) == (
            self.ti.dag_id, self.ti.task_id, self.ti.run_id, self.ti.map_index,
        )  # fmt: skip
        value = self.ti.xcoms.get(msg.key) if own else None
        serialized = None if value is None else json.loads(json.dumps(BaseXCom.serialize_value(value)))
        return XComResult(key=msg.key, value=serialized)

    async def asend(self, msg: Any) -> Any:
        return self.send(msg)
