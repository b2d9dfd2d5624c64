"""
What a send remembers across tries of one task instance, and its default idempotency key.

Airflow 3 clears XCom between tries, so a send is remembered in the task's
``task_state_store`` (Airflow >= 3.3).  On 3.1/3.2 there is none: a retry then sends again
under the same derived ``Idempotency-Key``, and deduplication is up to the service.
Shared by the single and the bulk send operators.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, cast

from vantax_provider.idempotency import derive_idempotency_key

if TYPE_CHECKING:
    from airflow.sdk.definitions.context import Context

log = logging.getLogger(__name__)

#: The key under which the single-send operator stores ``{"conversation_id", "message_id"}``.
SENT_MESSAGE_KEY = "vantax_sent_message"

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


def load(context: Context | Mapping[str, Any], key: str) -> Any:
    """The value stored under ``key`` by an earlier try of this task instance, or None."""
    store = state_store(context)
    return None if store is None else store.get(key)


def save(context: Context | Mapping[str, Any], key: str, value: Any) -> bool:
    """
    Store a JSON value for later tries of this task instance; False when there is no store.

    Kept for the default retention (``[state_store] default_retention_days``), far beyond any retry.
    """
    store = state_store(context)
    if store is None:
        return False
    store.set(key, value)
    return True


def load_sent_message(
    context: Context | Mapping[str, Any], key: str = SENT_MESSAGE_KEY
) -> tuple[str, str] | None:
    """``(conversation_id, message_id)`` of a message an earlier try sent, or None."""
    value = load(context, key)
    if isinstance(value, dict) and isinstance(value.get("message_id"), str):
        return str(value.get("conversation_id") or ""), value["message_id"]
    return None


def save_sent_message(
    context: Context | Mapping[str, Any], conversation_id: str, message_id: str, key: str = SENT_MESSAGE_KEY
) -> bool:
    return save(context, key, {"conversation_id": conversation_id, "message_id": message_id})


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


def idempotency_key_for(
    option: str | None,
    context: Context | Mapping[str, Any],
    *,
    conversation_id: str,
    body: dict[str, Any],
    recipient: int | None = None,
) -> str | None:
    """
    The ``Idempotency-Key`` to send.

    ``option`` None derives one from the task instance and the request; ``""`` opts out (no header);
    any other string is used as given (for a bulk send, suffixed with the recipient's position).
    """
    if option is None:
        return derive_idempotency_key(
            **task_identity(context), conversation_id=conversation_id, body=body, recipient=recipient
        )
    if option == "":
        return None
    return option if recipient is None else f"{option}-{recipient}"
