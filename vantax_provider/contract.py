"""
What the provider assumes about the Vantax API beyond its published reference.

Every assumption listed in ``docs/api-assumptions.md`` lives here, in one place, so that a
correction from the vendor is a one-line change.
"""

from __future__ import annotations

from typing import Any, Final

#: The Airflow connection id used when none is given (``VantaxHook.default_conn_name``).
DEFAULT_CONN_ID: Final = "vantax_default"

#: The documented production base URL.
DEFAULT_BASE_URL: Final = "https://api.vantaxai.com"

#: Documented: create a message.  Assumed: read one back with GET on the same collection.
MESSAGES_PATH: Final = "/v1/conversations/{conversation_id}/messages"
MESSAGE_PATH: Final = "/v1/conversations/{conversation_id}/messages/{message_id}"

#: Assumed: the service deduplicates POSTs that carry the same key.  Not promised by the reference.
IDEMPOTENCY_HEADER: Final = "Idempotency-Key"

#: Assumed: 429 answers may carry ``Retry-After`` (seconds or an HTTP date).
RETRY_AFTER_HEADER: Final = "Retry-After"

#: Documented live keys start ``vx_live_``; test keys are assumed to start ``vx_test_``.
API_KEY_PREFIXES: Final = ("vx_live_", "vx_test_")

#: Documented field limits.
CONTENT_MAX_CHARS: Final = 4000
SUBJECT_MAX_CHARS: Final = 255
#: Not documented: a defensive bound on ids and media URLs, far above any real value.
ID_MAX_CHARS: Final = 256
URL_MAX_CHARS: Final = 2048

#: The documented delivery statuses, and which of them are final, are the status vocabulary in
#: ``vantax_provider/status.py`` (``MessageStatus``); other values may appear and are parsed as
#: plain strings.

#: Status codes after which a request is never repeated.
NEVER_RETRY: Final = frozenset({400, 401, 403, 404, 409, 413, 415, 422})
#: A POST answered with one of these cannot have created the message.
POST_NOT_CREATED: Final = frozenset({429, 503})
#: A POST answered with one of these may have created it: repeat only under an idempotency key.
POST_MAYBE_CREATED: Final = frozenset({500, 502, 504})

#: The fields of one message, as operators and the notifier take them (the path id first).
MESSAGE_FIELDS: Final = (
    "conversation_id", "channel", "content", "subject", "html", "from_phone_number_id", "media_url",
)  # fmt: skip
_OPTIONAL_FIELDS = frozenset({"subject", "html", "from_phone_number_id", "media_url"})


def omit_blank(fields: dict[str, Any]) -> dict[str, Any]:
    """Optional fields whose template rendered empty (e.g. ``"{{ params.x or '' }}"``) count as not given."""
    return {k: None if v == "" and k in _OPTIONAL_FIELDS else v for k, v in fields.items()}
