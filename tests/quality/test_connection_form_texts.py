"""The Airflow 3.1 form widgets (FAB stack) show the same labels and help texts as CONN_FIELDS,
which Airflow 3.2+ shows: one text per field, written once.

Neither test environment installs the FAB stack, so its three modules are stood in for by
recorders that keep what the widgets were built with."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from vantax_provider.get_provider_info import CONN_FIELDS
from vantax_provider.hooks.vantax import VantaxHook


class _Field:
    def __init__(self, label: Any, **kwargs: Any) -> None:
        self.label, self.kwargs = label, kwargs


class _IntegerField(_Field):
    pass


class _StringField(_Field):
    pass


def _module(name: str, **attrs: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    return module


@pytest.fixture
def fab_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    fakes = {
        "flask_appbuilder": _module("flask_appbuilder"),
        "flask_appbuilder.fieldwidgets": _module("flask_appbuilder.fieldwidgets", BS3TextFieldWidget=object),
        "flask_babel": _module("flask_babel", lazy_gettext=lambda text: f"gettext:{text}"),
        "wtforms": _module("wtforms", IntegerField=_IntegerField, StringField=_StringField),
        "wtforms.validators": _module(
            "wtforms.validators",
            NumberRange=lambda **kw: ("range", kw),
            Optional=lambda **kw: ("optional", kw),
        ),
    }
    for name, module in fakes.items():
        monkeypatch.setitem(sys.modules, name, module)


@pytest.mark.usefixtures("fab_stack")
def test_the_widgets_show_the_labels_and_help_texts_of_conn_fields() -> None:
    widgets = VantaxHook.get_connection_form_widgets()
    assert set(widgets) == set(CONN_FIELDS)
    for name, widget in widgets.items():
        assert widget.label == f"gettext:{CONN_FIELDS[name]['label']}", name
        assert widget.kwargs["description"] == CONN_FIELDS[name]["description"], name


@pytest.mark.usefixtures("fab_stack")
def test_numbers_are_number_fields_with_their_bounds() -> None:
    widgets = VantaxHook.get_connection_form_widgets()
    assert isinstance(widgets["timeout"], _IntegerField)
    assert ("range", {"min": 1}) in widgets["timeout"].kwargs["validators"]
    assert ("range", {"min": 0}) in widgets["max_retries"].kwargs["validators"]
    assert isinstance(widgets["dashboard_url"], _StringField)
