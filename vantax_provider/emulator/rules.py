"""The emulator's own reading of the Vantax create-message reference.

Deliberately independent of the client's models: if both sides shared one validator, a mistake
in it would pass unnoticed. Each undocumented choice is a constant or a short branch here.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

CHANNELS: tuple[str, ...] = ("sms", "whatsapp", "facebook", "instagram", "email")
# Channels whose platforms enforce a customer-service window (reference: "Messaging windows").
WINDOWED_CHANNELS: frozenset[str] = frozenset({"whatsapp", "facebook", "instagram"})
NEEDS_PHONE_NUMBER: frozenset[str] = frozenset({"sms", "whatsapp"})
FIELDS: frozenset[str] = frozenset(
    {"channel", "content", "subject", "html", "from_phone_number_id", "media_url"}
)
CONTENT_MAX = 4000
SUBJECT_MAX = 255
MAX_BODY_BYTES = 1024 * 1024
IDEMPOTENCY_KEY_MAX = 255
WINDOW_CLOSED_MESSAGE = "Outside the 24-hour messaging window. Use an approved template instead."

# Conversation-id prefixes that pick a behaviour without any configuration.
FAIL_PREFIX = "conv_fail"
STUCK_PREFIX = "conv_stuck"
CLOSED_PREFIX = "conv_closed"


def contains_null(value: Any) -> bool:
    """Whether a parsed JSON value holds a ``null`` anywhere (the client should never send one)."""
    if value is None:
        return True
    if isinstance(value, dict):
        return any(contains_null(v) for v in value.values())
    if isinstance(value, list):
        return any(contains_null(v) for v in value)
    return False


def _is_http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and value == value.strip()


def _check_string(body: dict[str, Any], name: str, max_len: int | None, errors: list[str]) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        errors.append(f"{name}: must be a string")
        return None
    if max_len is not None and len(value) > max_len:
        errors.append(f"{name}: must be at most {max_len} characters (got {len(value)})")
    return value


def validate_body(raw: Any) -> list[str]:
    """Return one ``"field: reason"`` per failing rule; an empty list means the body is valid.

    Nulls count as absent (the reference says nothing about them; a lenient server is the safe
    guess, and the request log records them so tests can still insist the client sends none).
    """
    if not isinstance(raw, dict):
        return ["body: must be a JSON object"]
    body = {k: v for k, v in raw.items() if v is not None}
    errors = [f"{name}: unknown field" for name in sorted(set(body) - FIELDS)]

    channel = body.get("channel")
    if channel is None:
        errors.append("channel: is required")
    elif not isinstance(channel, str) or channel not in CHANNELS:
        errors.append(f"channel: must be one of {', '.join(CHANNELS)}")
        channel = None

    content = body.get("content")
    if content is None:
        errors.append("content: is required")
    elif not isinstance(content, str):
        errors.append("content: must be a string")
    elif not content:
        errors.append("content: must not be empty")
    elif len(content) > CONTENT_MAX:
        errors.append(f"content: must be at most {CONTENT_MAX} characters (got {len(content)})")

    # subject/html/from_phone_number_id are "ignored" on other channels, but a wrong type is
    # still a client bug worth reporting, so they are type-checked on every channel.
    subject = _check_string(body, "subject", SUBJECT_MAX, errors)
    if channel == "email" and "subject" not in body:
        errors.append("subject: is required for channel email")
    elif channel == "email" and subject == "":
        errors.append("subject: must not be empty for channel email")
    _check_string(body, "html", None, errors)
    phone = _check_string(body, "from_phone_number_id", None, errors)
    if channel in NEEDS_PHONE_NUMBER and "from_phone_number_id" not in body:
        errors.append(f"from_phone_number_id: is required for channel {channel}")
    elif channel in NEEDS_PHONE_NUMBER and phone == "":
        errors.append(f"from_phone_number_id: must not be empty for channel {channel}")

    media = raw.get("media_url")
    if media is not None:
        if not isinstance(media, list):
            errors.append("media_url: must be a list of URLs")
        else:
            for i, item in enumerate(media):
                if not isinstance(item, str) or not _is_http_url(item):
                    errors.append(f"media_url[{i}]: must be an absolute http(s) URL")
    return errors


def ignored_fields(body: dict[str, Any]) -> list[str]:
    """Fields the reference says the service ignores on this channel (recorded for tests to inspect)."""
    channel = body.get("channel")
    present = {k for k, v in body.items() if v is not None}
    if channel == "email":
        ignored = present & {"media_url", "from_phone_number_id"}
    elif channel in NEEDS_PHONE_NUMBER:
        ignored = present & {"subject", "html"}
    else:
        ignored = present & {"subject", "html", "from_phone_number_id"}
    return sorted(ignored)


def final_outcome(conversation_id: str, outcomes: dict[str, str]) -> str:
    """The status a message ends in; ``"stuck"`` means it stays ``sent``."""
    if conversation_id in outcomes:
        return outcomes[conversation_id]
    if conversation_id.startswith(FAIL_PREFIX):
        return "failed"
    if conversation_id.startswith(STUCK_PREFIX):
        return "stuck"
    return "delivered"


def window_closed(conversation_id: str, channel: str, closed: frozenset[str]) -> bool:
    """Whether a send is rejected with 422 for being outside the messaging window."""
    if channel not in WINDOWED_CHANNELS:
        return False
    return conversation_id in closed or conversation_id.startswith(CLOSED_PREFIX)
