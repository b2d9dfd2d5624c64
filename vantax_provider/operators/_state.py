"""
What the single send remembers across tries of one task instance, and its default idempotency key.

The record lives in the task's ``task_state_store`` (:mod:`vantax_provider.task_state`, shared
with the bulk send); on Airflow 3.1/3.2 there is none and nothing is remembered.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from vantax_provider import task_state
from vantax_provider.idempotency import derive_single_send_key

if TYPE_CHECKING:
    from airflow.sdk.definitions.context import Context

log = logging.getLogger(__name__)

#: The key under which the single-send operator keeps its record (see :func:`save_single`).
SENT_MESSAGE_KEY = "vantax_sent_message"


def load(context: Context | Mapping[str, Any], key: str) -> Any:
    """The value stored under ``key`` by an earlier try of this task instance, or None."""
    store = task_state.state_store(context)
    return None if store is None else store.get(key)


def save(context: Context | Mapping[str, Any], key: str, value: Any) -> bool:
    """
    Store a JSON value for later tries of this task instance; False when there is no store.

    Kept for the default retention (``[state_store] default_retention_days``), far beyond any retry.
    """
    store = task_state.state_store(context)
    if store is None:
        return False
    store.set(key, value)
    return True


# -- the single send: an intent written before the POST ------------------------------------------

#: ``state`` of a single-send record: written before the POST, and after it with the message id.
INTENT, SENT = "intent", "sent"


def generation(context: Context | Mapping[str, Any]) -> int | None:
    """
    Which run of the task instance this try belongs to: its ``max_tries``.

    Airflow keeps ``max_tries`` across the retries of one run of a task instance and raises it
    when the task is cleared (to the last try number plus ``retries``), so the retries of one run
    share it and a clear gets a new one.  None where the task instance does not carry it.
    """
    value = getattr(cast("Mapping[str, Any]", context)["ti"], "max_tries", None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def single_send_key(
    option: str | None, context: Context | Mapping[str, Any], conversation_id: str
) -> str | None:
    """
    The ``Idempotency-Key`` of a single send.

    ``option`` None derives one from the task instance, its :func:`generation` and the
    conversation: **not** the body, so a field that renders differently on a retry
    (``now()``, a random value, a changed XCom) still presents the same key.  ``""`` sends no key;
    any other string is used as given.
    """
    if option == "":
        return None
    if option is not None:
        return option
    return derive_single_send_key(
        **task_state.task_identity(context), generation=generation(context), conversation_id=conversation_id
    )


def body_fingerprint(conversation_id: str, body: dict[str, Any]) -> str:
    """A SHA-256 of the conversation and body, kept instead of the body when content stays private."""
    material = json.dumps([conversation_id, body], sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(material.encode()).hexdigest()


def load_single(context: Context | Mapping[str, Any], option: str | None) -> dict[str, Any] | None:
    """
    The record an earlier try of this run of the task instance left, or None.

    A record counts when it was written in the same :func:`generation` (a retry), or under the
    same user-given ``idempotency_key`` (a clear with a fixed key).
    """
    value = load(context, SENT_MESSAGE_KEY)
    if not isinstance(value, dict):
        return None
    same_run = value.get("generation") == generation(context)
    same_key = option not in (None, "") and value.get("idempotency_key") == option
    if not (same_run or same_key) or value.get("state") not in (INTENT, SENT):
        return None
    if value["state"] == SENT and not isinstance(value.get("message_id"), str):
        return None
    return value


def save_single(context: Context | Mapping[str, Any], record: dict[str, Any]) -> bool:
    """Write the single-send record; a failing store is logged and reported as False, never raised."""
    try:
        return save(context, SENT_MESSAGE_KEY, record)
    except Exception as exc:  # the send must not fail because the bookkeeping did
        log.warning("Could not write the Vantax send record to the task state store: %s", str(exc)[:300])
        return False


def forget_single(context: Context | Mapping[str, Any]) -> None:
    """Drop the intent of a send that certainly created nothing (the request was refused)."""
    store = task_state.state_store(context)
    if store is None:
        return
    try:
        store.delete(SENT_MESSAGE_KEY)
    except Exception as exc:
        log.warning("Could not clear the Vantax send record in the task state store: %s", str(exc)[:300])
