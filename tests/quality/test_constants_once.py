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


def _assignments(name: str) -> list[str]:
    """The modules of the package that assign ``name`` at module level."""
    return sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "emulator" not in path.parts
        for node in ast.parse(path.read_text(encoding="utf-8")).body
        if isinstance(node, ast.Assign | ast.AnnAssign)
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Name) and target.id == name
    )


@pytest.mark.parametrize(
    "name",
    [
        "DEFAULT_POLL_INTERVAL",
        "DEFAULT_DELIVERY_TIMEOUT",
        "DEFAULT_SEND_CONCURRENCY",
        "DEFAULT_READ_CONCURRENCY",
        "ON_UNCERTAIN",
    ],
)
def test_shared_defaults_are_defined_once_in_defaults_py(name: str) -> None:
    assert _assignments(name) == ["defaults.py"]


@pytest.mark.parametrize(
    "name",
    [
        "DEFAULT_MAX_CONCURRENCY",
        "TERMINAL_STATUSES",
        "NON_TERMINAL_STATUSES",
        "KNOWN_STATUSES",
        "DEFAULT_SUCCESS",
    ],
)
def test_the_status_vocabulary_and_old_constant_names_are_not_redefined(name: str) -> None:
    # The status sets live in status.py only (models.py re-exports them); the old per-module
    # concurrency constant is gone (send and read concurrency are two defaults with two names).
    assert _assignments(name) == ([] if name == "DEFAULT_MAX_CONCURRENCY" else ["status.py"])


def test_every_class_takes_the_shared_defaults() -> None:
    from vantax_provider import defaults
    from vantax_provider.triggers.vantax import VantaxMessagesStatusTrigger, VantaxMessageStatusTrigger

    def default(cls: type, param: str) -> object:
        return inspect.signature(cls.__init__).parameters[param].default

    for cls in (VantaxSendMessageOperator, VantaxBulkSendMessageOperator, VantaxMessageStatusTrigger,
                VantaxMessagesStatusTrigger):  # fmt: skip
        assert default(cls, "poll_interval") == defaults.DEFAULT_POLL_INTERVAL
    for cls in (VantaxSendMessageOperator, VantaxBulkSendMessageOperator):
        assert default(cls, "delivery_timeout") == defaults.DEFAULT_DELIVERY_TIMEOUT
        assert default(cls, "on_uncertain") == defaults.ON_UNCERTAIN[0]
    assert default(VantaxBulkSendMessageOperator, "max_concurrency") == defaults.DEFAULT_SEND_CONCURRENCY
    assert default(VantaxMessagesStatusTrigger, "max_concurrency") == defaults.DEFAULT_READ_CONCURRENCY
    assert inspect.signature(VantaxHook.wait_for_message_status).parameters["poll_interval"].default == (
        defaults.DEFAULT_POLL_INTERVAL
    )
