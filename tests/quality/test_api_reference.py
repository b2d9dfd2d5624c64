"""The API reference page (docs/reference.md, rendered by mkdocstrings in `make docs`) lists every
public class and function, under the import path users write."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest
from airflow.sdk import BaseHook, BaseNotifier, BaseOperator, BaseOperatorLink
from airflow.triggers.base import BaseTrigger

from vantax_provider.get_provider_info import get_provider_info

PAGE = Path(__file__).resolve().parents[2] / "docs" / "reference.md"
AIRFLOW_BASES = (BaseHook, BaseOperator, BaseOperatorLink, BaseTrigger, BaseNotifier)


def _public_modules() -> list[str]:
    info = get_provider_info()
    modules = [
        module
        for kind in ("hooks", "operators", "sensors", "triggers")
        for entry in info[kind]
        for module in entry["python-modules"]
    ]
    modules += [path.rsplit(".", 1)[0] for path in info["notifications"]]
    # What DAG authors and their tests import besides the Airflow components.
    modules += [
        "vantax_provider.models",
        "vantax_provider.status",
        "vantax_provider.exceptions",
        "vantax_provider.idempotency",
        "vantax_provider.emulator.testing",
        "vantax_provider.emulator.pytest_plugin",
    ]
    return sorted(set(modules))


def _public_names(module_name: str) -> list[str]:
    """Classes, functions and fixtures the module defines, plus the Airflow components it re-exports."""
    module = importlib.import_module(module_name)
    names = []
    for name, value in vars(module).items():
        if name.startswith("_") or inspect.ismodule(value) or not callable(value):
            continue
        if getattr(value, "__name__", name) != name:  # another name for an object listed under its own
            continue
        defined_here = getattr(value, "__module__", None) == module_name
        re_exported = (
            inspect.isclass(value)
            and issubclass(value, AIRFLOW_BASES)
            and value.__module__.startswith("vantax_provider.")
            # a class re-exported from another public module is listed there, under its own module
            and value.__module__.rsplit(".", 1)[-1].startswith("_")
            and name in getattr(module, "__all__", ())
        )
        if defined_here or re_exported:
            names.append(name)
    return names


def _rendered() -> set[str]:
    return set(re.findall(r"^:::\s+(\S+)", PAGE.read_text(encoding="utf-8"), re.MULTILINE))


@pytest.mark.parametrize("module_name", _public_modules())
def test_every_public_object_is_on_the_reference_page(module_name: str) -> None:
    rendered = _rendered()
    names = _public_names(module_name)
    assert names, f"{module_name} defines nothing public: the walk above is wrong"
    if module_name in rendered:  # the whole module is rendered, members included
        return
    missing = [name for name in names if f"{module_name}.{name}" not in rendered]
    assert not missing, f"add to docs/reference.md: {', '.join(f'::: {module_name}.{n}' for n in missing)}"


def test_the_bulk_operator_is_defined_in_a_public_module_and_keeps_its_old_path() -> None:
    from vantax_provider.operators import vantax, vantax_bulk

    assert vantax_bulk.VantaxBulkSendMessageOperator.__module__ == "vantax_provider.operators.vantax_bulk"
    assert vantax.VantaxBulkSendMessageOperator is vantax_bulk.VantaxBulkSendMessageOperator
    assert "vantax_provider.operators.vantax_bulk.VantaxBulkSendMessageOperator" in _rendered()
