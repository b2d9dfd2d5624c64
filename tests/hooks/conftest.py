from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest

from vantax_provider.emulator.testing import Emulator
from vantax_provider.hooks.vantax import VantaxHook


@pytest.fixture
def make_hook(
    vantax_emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., VantaxHook]]:
    """A hook on the emulator; connection extras as keyword arguments (fast retries by default)."""
    hooks: list[VantaxHook] = []

    def make(api_key: str | None = None, host: str | None = None, **extra: object) -> VantaxHook:
        conn = {
            "conn_type": "vantax",
            "host": host or vantax_emulator.url,
            "password": vantax_emulator.api_key if api_key is None else api_key,
            "extra": {"retry_backoff": 0.01, "timeout": 5, **extra},
        }
        conn_id = f"vantax_test_{len(hooks)}"
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
        hook = VantaxHook(conn_id)
        hooks.append(hook)
        return hook

    yield make
    for hook in hooks:
        hook.close()
