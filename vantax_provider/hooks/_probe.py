"""The connection's Test button: does the base URL lead to the Vantax API, and is the key accepted?"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from vantax_provider.exceptions import VantaxAuthenticationError, VantaxNotFoundError
from vantax_provider.hooks._wire import message_path, transport_error, transport_errors

if TYPE_CHECKING:
    import httpx

    from vantax_provider.hooks._settings import VantaxSettings
    from vantax_provider.models import Message

#: The conversation and message read: ids that do not exist.
PROBE_ID = "airflow-connection-test"


def probe(
    client: httpx.Client, settings: VantaxSettings, read: Callable[[str, str], Message]
) -> tuple[bool, str]:
    """
    Read a message that does not exist, once without the key and once with it (``read``).

    The route must refuse the request without a key (401/403), so a base URL that does not lead
    to the API is not taken for an accepted key; with the key, a 404 in the API's JSON error
    envelope means the key was accepted.  Other API errors are raised.
    """
    path = message_path(PROBE_ID, PROBE_ID)
    request = client.build_request("GET", path)
    del request.headers["Authorization"]
    try:
        status = client.send(request).status_code
    except transport_errors() as exc:
        raise transport_error(exc, "GET", path, settings) from None
    if status not in (401, 403):
        return False, (
            f"The base URL {settings.base_url} does not look like the Vantax API: a request "
            f"without the API key to {settings.base_url + path} was answered {status}, not 401/403."
        )
    try:
        read(PROBE_ID, PROBE_ID)
    except VantaxNotFoundError as exc:
        if exc.api_message is None:
            return False, (
                f"The base URL {settings.base_url} answered 404 without the Vantax JSON error "
                "envelope: check the base URL."
            )
        return True, "Connection to Vantax succeeded: the API key was accepted."
    except VantaxAuthenticationError:
        return False, "Vantax refused the API key (401/403)."
    return True, "Connection to Vantax succeeded."
