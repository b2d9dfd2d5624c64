"""
Keeping secrets out of text: every form of the API key (and of a proxy password) that could show
in an error, a log line or a chained cause, and the means to replace or detect them.
"""

from __future__ import annotations

import base64
import json
from functools import lru_cache
from typing import TYPE_CHECKING
from urllib.parse import quote, quote_plus, urlsplit

if TYPE_CHECKING:
    from vantax_provider.hooks._settings import VantaxSettings


class ScrubbedCause(Exception):
    """The type and scrubbed text of a library exception whose own text held a secret."""


def secret_forms(secret: str) -> tuple[str, ...]:
    """Every form of a secret that could show in a text: plain, escaped, bytes repr, URL and base64."""
    return _secret_forms(secret)


@lru_cache(maxsize=16)
def _secret_forms(secret: str) -> tuple[str, ...]:
    raw = secret.encode("utf-8", "backslashreplace")
    forms = {
        secret,
        repr(secret)[1:-1],
        json.dumps(secret)[1:-1],
        repr(raw)[2:-1],
        quote(secret, safe=""),
        quote_plus(secret),
    }
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        for pad in range(3):  # the three alignments of the key inside a longer encoded text
            encoded = encode(b"\0" * pad + raw).decode("ascii").rstrip("=")
            core = encoded[4 if pad else 0 : -4 if len(encoded) > 8 else None]
            if len(core) >= 8:
                forms.add(core)
    return tuple(sorted((f for f in forms if f), key=len, reverse=True))


def _secrets(settings: VantaxSettings) -> list[str]:
    found = [settings.api_key] if settings.api_key else []
    if settings.proxy:
        password = urlsplit(settings.proxy).password
        if password:
            found.append(password)
    return found


def scrub(text: str, settings: VantaxSettings) -> str:
    """``text`` with every form of the API key (and a proxy password) replaced by ``***``."""
    for secret in _secrets(settings):
        for form in secret_forms(secret):
            text = text.replace(form, "***")
    return text


def holds_secret(text: str, settings: VantaxSettings) -> bool:
    return any(form in text for secret in _secrets(settings) for form in secret_forms(secret))


def exception_text(exc: BaseException) -> str:
    """What an exception can show of itself: its text and its arguments."""
    return f"{exc} {exc.args!r}"
