"""
The stored form of the bulk journal (:mod:`.journal`): identities, messages, sealed segments.

An identity is 8 bytes, stored as base64; a message is ``[conversation_id, message_id]``, stored as
JSON next to its identity.  Sizes are counted as JSON with every non-ASCII character escaped (the
most a store can make of them), so no value outgrows the store's 64 KB limit.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable
from typing import Any

HEAD_KEY = "vantax_bulk_journal"
VERSION = 2  # 1: without ``messages`` (still read: its messages are unknown)
ID_BYTES = 8
#: Characters an identity takes in a stored value (8 bytes of base64, rounded up).
ID_CHARS = 11
#: Most bytes of the entries in one sealed segment.
SEGMENT_BYTES = 16_384
#: Most bytes of the head's intent and entries together.
HEAD_BYTES = 56_000
#: Most identities in the stored intent: 43,692 characters of base64, leaving the head room for entries.
MAX_WINDOW = 4096

Message = list[str]  # [conversation_id, message_id]


def identity(key: str) -> int:
    """The journal's identity of a message with this idempotency key."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:ID_BYTES], "big")


def pack(ids: Iterable[int]) -> str:
    return encode(b"".join(i.to_bytes(ID_BYTES, "big") for i in ids))


def encode(raw: bytes | bytearray) -> str:
    return base64.b64encode(raw).decode("ascii")


def unpack(text: Any) -> list[int]:
    raw = base64.b64decode(str(text or ""), validate=True)
    if len(raw) % ID_BYTES:
        raise ValueError("truncated identity list")
    return [int.from_bytes(raw[i : i + ID_BYTES], "big") for i in range(0, len(raw), ID_BYTES)]


def segment_key(number: int) -> str:
    return f"{HEAD_KEY}_{number}"


def message_bytes(message: Message | None) -> int:
    """What one ``messages`` entry takes in a stored value (escaped JSON, with its separator)."""
    return len(json.dumps(message)) + 2


def stored_messages(value: Any, count: int) -> list[Message | None]:
    """The ``messages`` of a stored value, one per done identity; unknown ones (version 1) are None."""
    if not isinstance(value, list) or len(value) != count:
        return [None] * count
    return [
        [m[0], m[1]] if isinstance(m, list) and len(m) == 2 and all(isinstance(p, str) for p in m) else None
        for m in value
    ]


def seal(
    done: bytes, maybe: bytes, messages: list[Message | None], entry_bytes: int, room: int, first: int
) -> tuple[list[tuple[str, dict[str, Any]]], int, int, int]:
    """
    Move the oldest entries into sealed segments (numbered from ``first``), each of at most
    ``SEGMENT_BYTES``, until at most ``room`` bytes of entries are left for the head; returns the
    segments, how many done and maybe entries they took, and their bytes.
    """
    values: list[tuple[str, dict[str, Any]]] = []
    cut_done = cut_maybe = moved = 0
    total_done, total_maybe = len(done) // ID_BYTES, len(maybe) // ID_BYTES
    while entry_bytes - moved > room:
        first_done, first_maybe, size = cut_done, cut_maybe, 0
        while cut_done < total_done:
            entry = ID_CHARS + message_bytes(messages[cut_done])
            if size and size + entry > SEGMENT_BYTES:
                break
            size, cut_done = size + entry, cut_done + 1
        while cut_maybe < total_maybe and size + ID_CHARS <= SEGMENT_BYTES:
            size, cut_maybe = size + ID_CHARS, cut_maybe + 1
        if size == 0:
            break
        segment = {
            "done": encode(done[first_done * ID_BYTES : cut_done * ID_BYTES]),
            "maybe": encode(maybe[first_maybe * ID_BYTES : cut_maybe * ID_BYTES]),
            "messages": messages[first_done:cut_done],
        }
        values.append((segment_key(first + len(values)), segment))
        moved += size
    return values, cut_done, cut_maybe, moved
