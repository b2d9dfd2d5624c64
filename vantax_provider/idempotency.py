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
    material = json.dumps(
        [dag_id, task_id, run_id, -1 if map_index is None else map_index, conversation_id, body, recipient],
        sort_keys=True,
        ensure_ascii=True,
        separators=(",", ":"),
    )
    return KEY_PREFIX + hashlib.sha256(material.encode()).hexdigest()[:48]


def derive_bulk_idempotency_key(
    *,
    dag_id: str,
    task_id: str,
    run_id: str,
    map_index: int | None,
    conversation_id: str,
    body: dict[str, Any],
) -> str:
    """
    The key of one message of a bulk send: the task instance and the message, not its position.

    Two rows of one list that render to the same conversation and body share a key (the bulk
    operator sends them once); a row that moves in a changed list keeps its key.
    """
    material = json.dumps(
        ["bulk", dag_id, task_id, run_id, -1 if map_index is None else map_index, conversation_id, body],
        sort_keys=True,
        ensure_ascii=True,
        separators=(",", ":"),
    )
    return KEY_PREFIX + hashlib.sha256(material.encode()).hexdigest()[:48]
