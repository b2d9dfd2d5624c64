"""Fixtures of the reliability suites, and the one-line figures each suite prints at the end."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.reliability._support import FAST_EXTRAS, summary_lines
from vantax_provider.emulator.testing import Emulator


@pytest.fixture
def fast_conn(vantax_emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., str]]:
    """Point a connection (``vantax_default`` unless named) at the emulator with fast-retry extras."""

    def apply(conn_id: str = "vantax_default", api_key: str | None = None, **extra: Any) -> str:
        conn = {
            "conn_type": "vantax",
            "host": vantax_emulator.url,
            "password": vantax_emulator.api_key if api_key is None else api_key,
            "extra": {**FAST_EXTRAS, **extra},
        }
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
        return conn_id

    yield apply


def pytest_terminal_summary(terminalreporter: Any) -> None:
    lines = summary_lines()
    if lines:
        terminalreporter.write_sep("-", "reliability figures")
        for line in lines:
            terminalreporter.write_line(line)
