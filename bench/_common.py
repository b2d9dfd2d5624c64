"""What the benchmark's parent and child processes share."""

from __future__ import annotations

import resource
from typing import Any


class BenchTI:
    """The task-instance attributes the bulk operator reads when ``execute`` is called directly."""

    dag_id, task_id, run_id, map_index = "bench", "bulk", "bench_run", -1

    def xcom_push(self, key: str, value: Any) -> None:
        pass


class MemoryStore:
    """A ``task_state_store`` stand-in that serialises like the real one (JSON per value)."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def get(self, key: str, default: Any = None) -> Any:
        import json

        return json.loads(self.data[key]) if key in self.data else default

    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        import json

        self.data[key] = json.dumps(value)

    def delete(self, key: str) -> None:
        self.data.pop(key, None)


def context() -> Any:
    return {"ti": BenchTI(), "ds": "2025-01-01", "params": {}, "task_state_store": MemoryStore()}


def recipients(n: int, prefix: str = "conv_bench") -> list[dict[str, Any]]:
    return [{"cid": f"{prefix}_{i:06d}", "name": f"Customer {i}", "plan": "pro"} for i in range(n)]


MESSAGE_FIELDS: dict[str, Any] = {
    "conversation_id": "{{ recipient.cid }}",
    "channel": "email",
    "subject": "Your {{ recipient.plan }} plan",
    "content": "Hi {{ recipient.name }}, your {{ recipient.plan }} plan renews on {{ ds }}.",
}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
