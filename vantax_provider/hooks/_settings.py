"""Reading a Vantax Airflow connection into checked settings."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from vantax_provider import contract
from vantax_provider.exceptions import VantaxConfigurationError
from vantax_provider.hooks._retry import RetryPolicy

if TYPE_CHECKING:
    from airflow.sdk import Connection

DEFAULT_TIMEOUT = 30.0
DEFAULT_CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True)
class VantaxSettings:
    """What the hook reads from its Airflow connection.  The key is kept out of ``repr``."""

    base_url: str
    api_key: str = field(repr=False)
    timeout: float = DEFAULT_TIMEOUT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    default_from_phone_number_id: str | None = None
    dashboard_url: str | None = None
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


def normalise_base_url(host: str | None, schema: str | None = None, port: int | None = None) -> str:
    """The base URL from a connection's host; plain http is refused except on loopback."""
    raw = (host or "").strip() or contract.DEFAULT_BASE_URL
    if "://" not in raw:
        raw = f"{schema or 'https'}://{raw}"
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise VantaxConfigurationError(f"The Vantax base URL {raw!r} is not an absolute http(s) URL.")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise VantaxConfigurationError("The Vantax base URL must not carry credentials, a query or fragment.")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise VantaxConfigurationError(
            f"Refusing plain http to {parts.hostname!r}: the API key would travel unencrypted. "
            "Use https (plain http is allowed for loopback hosts only, such as the local emulator)."
        )
    netloc = parts.netloc if port is None or parts.port else f"{parts.netloc}:{port}"
    return f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}"


def _number(extra: dict[str, Any], name: str, default: float, *, minimum: float = 0) -> float:
    value = extra.get(name)
    if value in (None, ""):
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise VantaxConfigurationError(
            f"Connection extra {name!r} must be a number, got {value!r}."
        ) from None
    if number < minimum:
        raise VantaxConfigurationError(f"Connection extra {name!r} must be at least {minimum}.")
    return number


def _share(extra: dict[str, Any]) -> float:
    share = _number(extra, "rate_limit_share", 1.0, minimum=0.0)
    if not 0 < share <= 1:
        raise VantaxConfigurationError("Connection extra 'rate_limit_share' must be in (0, 1].")
    return share


def settings_from_connection(conn: Connection) -> VantaxSettings:
    """Read and check a Vantax connection."""
    if not conn.password:
        raise VantaxConfigurationError(
            f"The Vantax connection {conn.conn_id!r} has no API key: put it in the password field."
        )
    extra = conn.extra_dejson or {}
    retry = RetryPolicy(
        max_retries=int(_number(extra, "max_retries", RetryPolicy.max_retries)),
        backoff_base=_number(extra, "retry_backoff", RetryPolicy.backoff_base),
        max_retry_after=_number(extra, "max_retry_after", RetryPolicy.max_retry_after),
        max_total=_number(extra, "max_retry_time", RetryPolicy.max_total),
    )
    return VantaxSettings(
        base_url=normalise_base_url(conn.host, conn.schema, conn.port),
        api_key=conn.password,
        timeout=_number(extra, "timeout", DEFAULT_TIMEOUT, minimum=0.001),
        connect_timeout=_number(extra, "connect_timeout", DEFAULT_CONNECT_TIMEOUT, minimum=0.001),
        retry=retry,
        default_from_phone_number_id=extra.get("default_from_phone_number_id") or None,
        dashboard_url=extra.get("dashboard_url") or None,
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
