"""
The task's state store and the identity of the running task instance, for every send.

Airflow 3 clears XCom between tries, so what a send must remember across tries of one task
instance is kept in the task's ``task_state_store`` (Airflow >= 3.3).  On 3.1/3.2 there is none:
a retry then sends again under the same derived ``Idempotency-Key``, and deduplication is up to
the service.  Used by the single send (``operators``) and by the bulk send (``bulk``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, cast

if TYPE_CHECKING:
    from airflow.sdk.definitions.context import Context

log = logging.getLogger(__name__)

_warned_missing = False


class StateStore(Protocol):
    """The part of Airflow's ``TaskStateStoreAccessor`` used here."""

    def get(self, key: str, default: Any = None) -> Any: ...

    def set(self, key: str, value: Any, *, retention: Any = None) -> None: ...

    def delete(self, key: str) -> None: ...


def state_store(context: Context | Mapping[str, Any]) -> StateStore | None:
    """The task's state store, or None (logged once per process at INFO) on Airflow before 3.3."""
    global _warned_missing
    store = cast("Mapping[str, Any]", context).get("task_state_store")
    if store is None and not _warned_missing:
        _warned_missing = True
        log.info(
            "This Airflow has no task_state_store (it needs 3.3): a retried task instance may send again, "
            "under the same Idempotency-Key, and relies on Vantax to deduplicate it."
        )
    return cast("StateStore | None", store)


def task_identity(context: Context | Mapping[str, Any]) -> dict[str, Any]:
    """dag_id, task_id, run_id and map_index of the running task instance."""
    ti = cast("Mapping[str, Any]", context)["ti"]
    map_index = getattr(ti, "map_index", None)
    return {
        "dag_id": ti.dag_id,
        "task_id": ti.task_id,
        "run_id": ti.run_id,
        "map_index": None if map_index is None or map_index < 0 else int(map_index),
    }
