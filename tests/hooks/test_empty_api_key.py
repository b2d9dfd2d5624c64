"""
An empty API key, as ``--conn-password "$VANTAX_API_KEY"`` stores it when the variable is unset.

The documented commands refuse to run then (the shell's ``${VANTAX_API_KEY:?...}``), and the
connection form's Test button says what is wrong.  Airflow's API tests a connection under a
made-up conn_id (it exports the form's fields as ``AIRFLOW_CONN_<random>`` and calls
``Connection.test_connection()``), so the answer must not lean on that id.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _test_button(host: str, password: str | None, monkeypatch: pytest.MonkeyPatch) -> tuple[bool, str]:
    """What ``POST /api/v2/connections/test`` does with the form's fields."""
    from airflow.models.connection import Connection

    conn_id = "ztransientq7x"
    conn = Connection(conn_id=conn_id, conn_type="vantax", host=host, password=password)
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", conn.get_uri())
    status, message = conn.test_connection()
    return bool(status), str(message)


@pytest.mark.parametrize("password", ["", None, "   "], ids=["empty", "none", "blank"])
def test_the_test_button_names_the_missing_key(
    password: str | None, vantax_emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok, message = _test_button(vantax_emulator.url, password, monkeypatch)
    assert not ok
    assert message.startswith("No API key: the password field (API key) is empty."), message
    assert "VANTAX_API_KEY" in message  # the usual cause: the variable was not set
    assert "ztransientq7x" not in message.lower()  # the API's made-up id means nothing to the user
    assert vantax_emulator.requests() == []


def _key_commands() -> list[str]:
    found = []
    for page in PAGES:
        text = page.read_text()
        for block in re.findall(r"```(?:bash|console)\n(.*?)```", text, re.DOTALL):
            lines = block.replace("\\\n", " ").splitlines()
            found += [line.strip() for line in lines if "VANTAX_API_KEY" in line]
    return found


def test_each_documented_command_refuses_an_unset_key() -> None:
    commands = _key_commands()
    assert len(commands) >= 3, commands  # README, getting started, connection
    for command in commands:
        assert '"${VANTAX_API_KEY:?' in command, command
    env = {k: v for k, v in os.environ.items() if k != "VANTAX_API_KEY"}
    # Run as written (the shell refuses before `airflow` starts: nothing is stored).
    ran = subprocess.run(["bash", "-c", commands[0]], env=env, capture_output=True, text=True, timeout=60)
    assert ran.returncode != 0
    assert "VANTAX_API_KEY" in ran.stderr and "set it to your Vantax API key" in ran.stderr, ran.stderr
