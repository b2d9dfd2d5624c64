"""Looking up a Vantax Airflow connection and reading it into checked settings."""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.util import find_spec
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, urlsplit

from vantax_provider import contract
from vantax_provider._arguments import finite_number, whole_number
from vantax_provider._compat import async_connection_lookup, in_process_supervisor
from vantax_provider.exceptions import VantaxConfigurationError
from vantax_provider.hooks._retry import RetryPolicy
from vantax_provider.models import PHONE_CHANNELS, SendMessageRequest, build_send_request

if TYPE_CHECKING:
    from airflow.sdk import Connection
    from airflow.sdk.bases.hook import BaseHook

DEFAULT_TIMEOUT = 30.0
DEFAULT_CONNECT_TIMEOUT = 10.0
#: The longest duration any extra may set (one day): beyond it a sleep or timeout overflows.
MAX_SECONDS = 86_400.0
#: The most repeats ``max_retries`` may ask for.
MAX_RETRIES = 100
#: Schemes of a ``proxy`` extra.
PROXY_SCHEMES = ("http", "https", "socks5", "socks5h")
#: A trailing API version in a base URL: the hook's paths carry it already.
_VERSION_SUFFIX = re.compile(r"/v1/*$", re.IGNORECASE)


@dataclass(frozen=True)
class VantaxSettings:
    """What the hook reads from its Airflow connection.  The key and proxy are kept out of ``repr``."""

    base_url: str
    api_key: str = field(repr=False)
    timeout: float = DEFAULT_TIMEOUT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    default_from_phone_number_id: str | None = None
    dashboard_url: str | None = None
    proxy: str | None = field(default=None, repr=False)
    #: The account's rate limit (requests per second, all senders together); None for none.
    rate_limit: float | None = None
    #: The fraction of ``rate_limit`` one sender starts at before adapting (AIMD).
    rate_limit_share: float = 1.0


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False


def _split(url: str, what: str) -> SplitResult:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on an invalid port
    except ValueError:  # e.g. an unclosed IPv6 bracket, a port that is no number or too big
        raise VantaxConfigurationError(f"{what} is not a valid URL (host or port).") from None
    return parts


def _has_bad_chars(text: str) -> bool:
    """White space, control characters or anything else a URL may not carry as it is."""
    return any(c.isspace() or not c.isprintable() for c in text)


def normalise_base_url(host: str | None, schema: str | None = None, port: int | None = None) -> str:
    """
    The base URL from a connection's host, schema and port (see ``docs/connection.md``).

    A host without a scheme gets the schema when that is ``http``/``https``, else ``http`` for a
    loopback host and ``https`` for any other; any other schema is a base path (a URI's path lands
    there).  A trailing ``/v1`` is dropped: the request paths carry it.  Plain http is refused
    except on loopback.
    """
    raw = (host or "").strip() or contract.DEFAULT_BASE_URL
    scheme_field = (schema or "").strip().strip("/")
    if _has_bad_chars(raw) or _has_bad_chars(scheme_field):
        raise VantaxConfigurationError(
            "The Vantax base URL (host or schema field) contains white space or control characters."
        )
    scheme, base_path = None, ""
    if scheme_field.lower() in ("http", "https"):
        scheme = scheme_field.lower()
    elif scheme_field:
        base_path = "/" + scheme_field
    if "://" not in raw and _is_ipv6(raw):
        raw = f"[{raw}]"  # a connection URI's host is stored without its brackets
    if "://" in raw:
        if scheme is not None and not raw.lower().startswith(scheme + "://"):
            raise VantaxConfigurationError(
                f"The Vantax connection's schema {scheme!r} contradicts the scheme of its host URL."
            )
    else:
        bare = _split(f"//{raw}", "The Vantax base URL")
        loopback = bool(bare.hostname) and _is_loopback(bare.hostname or "")
        raw = f"{scheme or ('http' if loopback else 'https')}://{raw}"
    shown = raw[:200]
    parts = _split(raw, f"The Vantax base URL {shown!r}")
    url_port = parts.port
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise VantaxConfigurationError(f"The Vantax base URL {shown!r} is not an absolute http(s) URL.")
    if parts.username or parts.password or "@" in parts.netloc or parts.query or parts.fragment:
        raise VantaxConfigurationError("The Vantax base URL must not carry credentials, a query or fragment.")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise VantaxConfigurationError(
            f"Refusing plain http to {parts.hostname!r}: the API key would travel unencrypted. "
            "Use https (plain http is allowed for loopback hosts only, such as the local emulator)."
        )
    netloc = parts.netloc
    if port is not None and not url_port:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise VantaxConfigurationError("The Vantax connection's port must be a number from 1 to 65535.")
        netloc = f"{netloc}:{port}"
    path = _VERSION_SUFFIX.sub("", (parts.path + base_path).rstrip("/")).rstrip("/")
    url = f"{parts.scheme}://{netloc}{path}"
    _check_buildable(url, shown)
    return url


def _check_buildable(url: str, shown: str) -> None:
    """The HTTP library must accept the URL (IDNA host names, ports): fail here, not at the first request."""
    import httpx

    try:
        httpx.URL(url)
    except (httpx.InvalidURL, ValueError, UnicodeError):
        raise VantaxConfigurationError(f"The Vantax base URL {shown!r} is not a valid URL.") from None


def check_api_key(password: str | None, conn_id: str) -> str:
    """
    The key with surrounding white space stripped (a pasted key often ends in a newline).

    Any other character outside visible ASCII is refused: it would go into a header where the
    HTTP library rejects it and quotes the key.  The error never shows the key.
    """
    key = (password or "").strip()
    if not key:
        raise VantaxConfigurationError(
            f"The Vantax connection {conn_id!r} has no API key: put it in the password field."
        )
    for position, char in enumerate(key, start=1):
        if not "!" <= char <= "~":
            raise VantaxConfigurationError(
                f"The API key of the Vantax connection {conn_id!r} contains a character that is not "
                f"visible ASCII (character {position}); an API key is visible ASCII only. "
                "Paste it again without spaces, line breaks or typographic characters."
            )
    return key


def _number(
    extra: dict[str, Any],
    name: str,
    default: float,
    *,
    minimum: float = 0,
    maximum: float = MAX_SECONDS,
    integer: bool = False,
) -> float:
    value = extra.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    kind = "a whole number" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise VantaxConfigurationError(
            f"Connection extra {name!r} must be {kind}, got a {type(value).__name__}."
        )
    try:
        number = float(value)
    except (ValueError, OverflowError):
        raise VantaxConfigurationError(
            f"Connection extra {name!r} must be {kind}, got {str(value)[:50]!r}."
        ) from None
    if not math.isfinite(number):
        raise VantaxConfigurationError(f"Connection extra {name!r} must be a finite number.")
    if integer and not number.is_integer():
        raise VantaxConfigurationError(f"Connection extra {name!r} must be a whole number.")
    if number < minimum:
        raise VantaxConfigurationError(f"Connection extra {name!r} must be at least {minimum:g}.")
    if number > maximum:
        raise VantaxConfigurationError(f"Connection extra {name!r} must be at most {maximum:g}.")
    return number


def check_overrides(timeout: float | None, max_retries: int | None) -> tuple[float | None, int | None]:
    """The hook's ``timeout`` and ``max_retries`` arguments, checked like the extras they override."""
    error = VantaxConfigurationError
    if timeout is not None:
        timeout = finite_number(timeout, "timeout", positive=True, maximum=MAX_SECONDS, error=error)
    if max_retries is not None:
        max_retries = whole_number(max_retries, "max_retries", minimum=0, maximum=MAX_RETRIES, error=error)
    return timeout, max_retries


def check_rate_limit(rate_limit: float | None) -> float | None:
    """The hook's ``rate_limit`` argument: None, or a finite number of requests per second above 0."""
    if rate_limit is None:
        return None
    return finite_number(rate_limit, "rate_limit", positive=True, error=VantaxConfigurationError)


def check_connections(max_connections: int) -> int:
    """The hook's ``max_connections`` argument: a whole number, at least 1."""
    return whole_number(max_connections, "max_connections", minimum=1, error=VantaxConfigurationError)


def _share(extra: dict[str, Any]) -> float:
    share = _number(extra, "rate_limit_share", 1.0, minimum=0.0)
    if not 0 < share <= 1:
        raise VantaxConfigurationError("Connection extra 'rate_limit_share' must be in (0, 1].")
    return share


def _text(extra: dict[str, Any], name: str) -> str | None:
    value = extra.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise VantaxConfigurationError(
            f"Connection extra {name!r} must be a string, got a {type(value).__name__}."
        )
    value = value.strip()
    if _has_bad_chars(value):
        raise VantaxConfigurationError(
            f"Connection extra {name!r} must not contain white space or control characters."
        )
    return value


def _sender_id(extra: dict[str, Any]) -> str | None:
    name = "default_from_phone_number_id"
    value = extra.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # a number id typed as a JSON number
    text = _text({name: value}, name)
    if text is not None and len(text) > contract.ID_MAX_CHARS:
        raise VantaxConfigurationError(
            f"Connection extra {name!r} must be at most {contract.ID_MAX_CHARS} characters."
        )
    return text


def _http_url(extra: dict[str, Any], name: str, schemes: tuple[str, ...]) -> str | None:
    value = _text(extra, name)
    if value is None:
        return None
    try:
        parts = _split(value, name)
    except VantaxConfigurationError:
        ok = False
    else:
        ok = parts.scheme.lower() in schemes and bool(parts.hostname)
    if not ok:
        raise VantaxConfigurationError(
            f"Connection extra {name!r} must be an absolute URL with scheme {' or '.join(schemes)}."
        )
    return value


def _flag(extra: dict[str, Any], name: str) -> bool:
    value = extra.get(name)
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("", "true", "false"):
        return value.strip().lower() == "true"
    raise VantaxConfigurationError(f"Connection extra {name!r} must be true or false.")


def _check_proxy(proxy: str | None, base_url: str, allow_plain_http: bool) -> None:
    """A proxy carries the bearer key: in clear when the base URL is plain http."""
    if proxy is not None and base_url.startswith("http://"):
        _check_plain_http_proxy(proxy, allow_plain_http)
    if proxy is not None and proxy.lower().startswith("socks") and find_spec("socksio") is None:
        raise VantaxConfigurationError(
            "Connection extra 'proxy' names a SOCKS proxy, which needs the socksio package: "
            "install httpx[socks]."
        )


def _check_plain_http_proxy(proxy: str, allow_plain_http: bool) -> None:
    if not allow_plain_http:
        raise VantaxConfigurationError(
            "Connection extra 'proxy' is set and the base URL is plain http: the proxy would read "
            "the API key in clear. Use an https base URL or remove 'proxy'; for a test proxy on "
            "this machine, set the extra 'allow_plain_http_proxy' to true."
        )
    if not _is_loopback(_split(proxy, "proxy").hostname or ""):
        raise VantaxConfigurationError(
            "Connection extra 'allow_plain_http_proxy' is for a loopback proxy only (localhost, "
            "127.0.0.1, ::1): any other proxy would read the API key in clear."
        )


def settings_from_connection(conn: Connection) -> VantaxSettings:
    """Read and check a Vantax connection; every failure is a ``VantaxConfigurationError``."""
    api_key = check_api_key(conn.password, conn.conn_id)
    extra = conn.extra_dejson or {}
    if not isinstance(extra, dict):
        raise VantaxConfigurationError(
            f"The extra field of the Vantax connection {conn.conn_id!r} must be a JSON object."
        )
    retry = RetryPolicy(
        max_retries=int(
            _number(extra, "max_retries", RetryPolicy.max_retries, maximum=MAX_RETRIES, integer=True)
        ),
        backoff_base=_number(extra, "retry_backoff", RetryPolicy.backoff_base),
        max_retry_after=_number(extra, "max_retry_after", RetryPolicy.max_retry_after),
        max_total=_number(extra, "max_retry_time", RetryPolicy.max_total),
    )
    base_url = normalise_base_url(conn.host, conn.schema, conn.port)
    proxy = _http_url(extra, "proxy", PROXY_SCHEMES)
    _check_proxy(proxy, base_url, _flag(extra, "allow_plain_http_proxy"))
    return VantaxSettings(
        base_url=base_url,
        api_key=api_key,
        timeout=_number(extra, "timeout", DEFAULT_TIMEOUT, minimum=0.001),
        connect_timeout=_number(extra, "connect_timeout", DEFAULT_CONNECT_TIMEOUT, minimum=0.001),
        retry=retry,
        default_from_phone_number_id=_sender_id(extra),
        dashboard_url=_http_url(extra, "dashboard_url", ("http", "https")),
        proxy=proxy,
        rate_limit=_number(extra, "rate_limit", 0.0, minimum=0.0) or None,
        rate_limit_share=_share(extra),
    )


def mask_api_key(secret: str) -> None:
    """Register the key with Airflow's secrets masker, so no log line can show it."""
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # pragma: no cover - older task SDKs
        return
    mask_secret(secret)


async def amask_api_key(secret: str) -> None:
    """Async twin: on an event loop, a sync call to the supervisor could deadlock."""
    try:
        from airflow.sdk.log import amask_secret
    except ImportError:  # Airflow < 3.2
        mask_api_key(secret)
        return
    await amask_secret(secret)


async def aget_connection(conn_id: str, hook: BaseHook) -> Connection:
    """
    The connection ``conn_id``, looked up without blocking the event loop.

    Through common-compat's ``get_async_connection(conn_id, hook=...)`` where it exists (see
    ``async_connection_lookup``); else, and under ``airflow dags test`` / ``dag.test()``, through
    the synchronous lookup in a worker thread, which goes through the same secrets backends and
    masks the same secrets.  There Airflow's async lookup cannot reach the metadata DB (the
    in-process supervisor channel has no async request) and answers "isn't defined" for a
    connection made with ``airflow connections add``; a not-found answer of the async lookup is
    asked again through the synchronous one all the same.
    """
    from asgiref.sync import sync_to_async

    getter: Callable[..., Any] = sync_to_async(hook.get_connection)
    lookup = async_connection_lookup()
    if lookup is None or in_process_supervisor():
        conn: Connection = await getter(conn_id)
        return conn
    try:
        from airflow.sdk.exceptions import AirflowNotFoundException
    except ImportError:  # Airflow < 3.2 keeps it in core
        from airflow.exceptions import AirflowNotFoundException  # type: ignore[attr-defined]

    try:
        conn = await lookup(conn_id, hook=hook)
    except AirflowNotFoundException:
        hook.log.debug("The async lookup did not find %r; asking the sync lookup.", conn_id)
        conn = await getter(conn_id)
    return conn


def request_with_defaults(
    settings: VantaxSettings, conversation_id: str, fields: dict[str, Any]
) -> SendMessageRequest:
    """A validated message, with the connection's default sender number where an SMS or WhatsApp has none."""
    channel = fields.get("channel")
    if (
        not fields.get("from_phone_number_id")
        and settings.default_from_phone_number_id
        and isinstance(channel, str)
        and channel.strip().lower() in {c.value for c in PHONE_CHANNELS}
    ):
        fields = {**fields, "from_phone_number_id": settings.default_from_phone_number_id}
    return build_send_request(conversation_id=conversation_id, **fields)
