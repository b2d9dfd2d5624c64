"""Deterministic idempotency keys, so a repeated task instance cannot send the same message twice."""

from __future__ import annotations

import hashlib
import json
from typing import Any

KEY_PREFIX = "airflow-"


def derive_idempotency_key(
    *,
    dag_id: str,
    task_id: str,
    run_id: str,
    map_index: int | None,
    conversation_id: str,
    body: dict[str, Any],
    recipient: int | None = None,
) -> str:
    """
    A key that is the same for every try of one task instance sending one message.

    The try number is left out on purpose: a retry must present the same key.  The body is
    part of it, so two different messages of one task never share a key.

    :param recipient: the recipient's position in a bulk send.
    """
    return derive_key([dag_id, task_id, run_id, map_index_part(map_index), conversation_id, body, recipient])


def derive_single_send_key(
    *,
    dag_id: str,
    task_id: str,
    run_id: str,
    map_index: int | None,
    generation: int | None,
    conversation_id: str,
) -> str:
    """
    The key of a single send: the task instance, the run of it (``generation``) and the conversation.

    Not the body, so a field that renders differently on a retry still presents the same key.
    """
    return derive_key(["single", dag_id, task_id, run_id, map_index, generation, conversation_id])


def map_index_part(map_index: int | None) -> int:
    """A task instance's map index as a key part: -1 when it is not mapped."""
    return -1 if map_index is None else map_index


def derive_key(parts: list[Any]) -> str:
    """
    The key for a list of JSON values: the prefix and 48 hex characters of their SHA-256.

    The recipes above, and the bulk send's (:func:`vantax_provider.bulk.items.bulk_key`), are
    built on it; a recipe must never change, or a retry after an upgrade would send again.
    """
    material = json.dumps(parts, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    return KEY_PREFIX + hashlib.sha256(material.encode()).hexdigest()[:48]
