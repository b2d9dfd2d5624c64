"""Constants written once (issue 11): the default connection id lives in ``contract.py``."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from vantax_provider.hooks.vantax import VantaxHook
from vantax_provider.notifications.vantax import VantaxNotifier
from vantax_provider.operators.vantax import VantaxBulkSendMessageOperator, VantaxSendMessageOperator
from vantax_provider.sensors.vantax import VantaxMessageStatusSensor

PACKAGE = Path(__file__).resolve().parents[2] / "vantax_provider"


def test_the_default_connection_id_is_written_out_only_in_contract_py() -> None:
    holders = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        # The emulator shares no code with the client (a contract in pyproject.toml), so it may not
        # import the constant: its helper writes Airflow's conventional name itself.
        if "emulator" not in path.parts
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and node.value == "vantax_default"
    )
    assert holders == ["contract.py"]


@pytest.mark.parametrize(
    "cls",
    [
        VantaxHook,
        VantaxSendMessageOperator,
        VantaxBulkSendMessageOperator,
        VantaxMessageStatusSensor,
        VantaxNotifier,
    ],
)
def test_every_class_defaults_to_the_hook_s_default_connection(cls: type) -> None:
    default = inspect.signature(cls.__init__).parameters["vantax_conn_id"].default
    assert default == VantaxHook.default_conn_name == "vantax_default"
