"""
The connection's Test button: does the base URL lead to the Vantax messages API, and is the key
accepted?  Four reads of a message that does not exist, none repeated, within a time budget.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from vantax_provider.exceptions import (
    VantaxAuthenticationError,
    VantaxError,
    VantaxNotFoundError,
    VantaxRateLimitError,
)
from vantax_provider.hooks._wire import (
    message_path,
    path_segment,
    read_answer,
    transport_error,
    transport_errors,
)

if TYPE_CHECKING:
    import httpx

    from vantax_provider.hooks._settings import VantaxSettings

#: The conversation and message read: ids that do not exist.
PROBE_ID = "airflow-connection-test"
#: A key no account has: a server that accepts it does not check keys (built in two parts, so that
#: no key scanner takes this line for a real key).
MADE_UP_KEY = "vx_test_" + "airflow-connection-test-made-up-key"
#: Seconds the whole test may take; each request gets what is left (the connection's timeouts
#: still apply when shorter).  A request started just before the end may overrun it once.
PROBE_SECONDS = 15.0

_NO_KEY, _OWN_KEY = "", None


class _Probe:
    def __init__(self, client: httpx.Client, settings: VantaxSettings) -> None:
        self.client, self.settings = client, settings
        self.ends = time.monotonic() + PROBE_SECONDS

    def ask(self, path: str, key: str | None) -> tuple[httpx.Response, bytes | None]:
        """One GET of ``path``: without a key (``""``), with ``key``, or with the connection's (None)."""
        import httpx

        from vantax_provider.hooks._answers import fetch

        left = self.ends - time.monotonic()
        if left <= 0:
            raise VantaxError(f"The connection test ran out of time ({PROBE_SECONDS:g}s); test again.")
        settings = self.settings
        timeout = httpx.Timeout(min(settings.timeout, left), connect=min(settings.connect_timeout, left))
        request = self.client.build_request("GET", path, timeout=timeout)
        if key == _NO_KEY:
            del request.headers["Authorization"]
        elif key is not None:
            request.headers["Authorization"] = f"Bearer {key}"
        try:
            return fetch(self.client, request)
        except transport_errors() as exc:
            error = transport_error(exc, "GET", path, settings)
        raise error  # outside the except block: the library's exception is not its context

    def answer(self, path: str) -> VantaxError | None:
        """The keyed read of ``path`` as the hook reads answers: an error, or None for a message."""
        response, raw = self.ask(path, _OWN_KEY)
        outcome = read_answer(response, raw, "GET", path, self.settings)
        return outcome if isinstance(outcome, VantaxError) else None


def _limited(where: str) -> str:
    return f"Vantax answered 429 (rate limited) to the test's {where}: nothing was proven. Test again later."


def probe(client: httpx.Client, settings: VantaxSettings) -> tuple[bool, str]:
    """
    The Test button's verdict and what it proved.

    1. Without a key, the message route must refuse the read (401/403): a base URL that leads
       elsewhere is not taken for an accepted key.
    2. A made-up key must be refused too: a server that only checks that a key is there proves
       nothing about the key.
    3. With the key, a 404 in the API's JSON error envelope: the key was accepted.
    4. With the key, a path that is no API route must be answered otherwise than the missing
       message, or a missing message cannot be told from a wrong route (a gateway that checks
       the key before routing, a catch-all server): the base URL is not proven.

    Nothing is sent.  Errors (transport, time budget) are raised as ``VantaxError``.
    """
    run, base = _Probe(client, settings), settings.base_url
    path = message_path(PROBE_ID, PROBE_ID)
    status = run.ask(path, _NO_KEY)[0].status_code
    if status == 429:
        return False, _limited("request without a key")
    if status not in (401, 403):
        return False, (
            f"The base URL {base} does not look like the Vantax API: a request "
            f"without the API key to {base + path} was answered {status}, not 401/403."
        )
    status = run.ask(path, MADE_UP_KEY)[0].status_code
    if status == 429:
        return False, _limited("request with a made-up key")
    if status not in (401, 403):
        return False, (
            f"The server at {base} did not refuse a made-up key (it answered {status}): it does "
            "not check API keys as Vantax does, so your key is not proven."
        )
    found = run.answer(path)
    if found is None:  # a message with the probe's id exists: the route and the key work
        return True, "Connection to Vantax succeeded: the API key was accepted (a message was read)."
    if isinstance(found, VantaxAuthenticationError):
        return False, "Vantax refused the API key (401/403)."
    if isinstance(found, VantaxRateLimitError):
        return False, _limited("read with the API key")
    if not isinstance(found, VantaxNotFoundError):
        return False, str(found)
    if found.api_message is None:
        return False, (
            f"The base URL {base} answered 404 without the Vantax JSON error envelope: check the base URL."
        )
    segment = path_segment(PROBE_ID)
    control = run.answer(f"/v1/conversations/{segment}/{segment}-no-such-route/{segment}")
    said = (found.status_code, found.api_message)
    if control is not None and (control.status_code, control.api_message) == said:
        return False, (
            f"The API key was accepted, but the base URL {base} is not proven to lead to the Vantax "
            f"messages API: a missing message and a path that is no API route were answered alike "
            f"(HTTP {found.status_code}, {found.api_message!r}). Check the base URL (a gateway that "
            "checks the key before routing answers every path so)."
        )
    return True, (
        "Connection to Vantax succeeded: the API key was accepted and a made-up key refused, and the "
        "messages route answered a missing message unlike a path that is no route. Nothing was sent."
    )
