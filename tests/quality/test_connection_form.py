"""
The Vantax connection type as the Airflow UI sees it, on whichever Airflow this suite runs on.

``HookMetaService.hook_meta_data()`` is what the api-server's ``/ui/connections/hook_meta``
answers, from which the UI builds the Add Connection form.  The browser test
(``test_connection_form_browser.py``) checks the rendered form itself.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
from typing import Any

import pytest

from vantax_provider.get_provider_info import CONN_FIELDS, UI_FIELD_BEHAVIOUR, get_provider_info
from vantax_provider.hooks.vantax import VantaxHook


def _airflow_version() -> tuple[int, int]:
    from airflow import __version__

    major, minor = __version__.split(".")[:2]
    return int(major), int(minor)


# Airflow 3.1 builds provider forms only from the hook's wtforms widgets (FAB stack); 3.2+ from conn-fields.
FORM_FROM_CONN_FIELDS = _airflow_version() >= (3, 2)
FORM_FROM_WIDGETS = importlib.util.find_spec("wtforms") is not None


def _vantax_meta() -> Any:
    from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService

    metas = [m for m in HookMetaService.hook_meta_data() if m.connection_type == "vantax"]
    assert len(metas) == 1, "the Vantax connection type is not offered by the UI"
    return metas[0]


def test_the_ui_offers_the_vantax_connection_type() -> None:
    meta = _vantax_meta()
    assert meta.hook_name == "Vantax"
    assert meta.hook_class_name == "vantax_provider.hooks.vantax.VantaxHook"


@pytest.mark.skipif(
    not (FORM_FROM_CONN_FIELDS or FORM_FROM_WIDGETS),
    reason="Airflow 3.1 without the FAB provider builds no custom connection forms (documented)",
)
def test_the_form_has_the_api_key_base_url_and_timeout_with_their_labels() -> None:
    meta = _vantax_meta()
    standard = meta.standard_fields
    assert standard.password.title == "API key" and not standard.password.hidden
    assert standard.host.title == "Base URL" and not standard.host.hidden
    assert standard.login.hidden and standard.port.hidden
    extra = json.loads(json.dumps(meta.extra_fields, default=lambda o: o.model_dump()))
    assert set(extra) >= {"timeout", "max_retries", "default_from_phone_number_id", "dashboard_url"}
    assert extra["timeout"]["schema"]["title"] == "Timeout"


def test_the_hook_describes_the_same_form_as_the_provider_info() -> None:
    behaviour = VantaxHook.get_ui_field_behaviour()
    assert behaviour["relabeling"] == {"password": "API key", "host": "Base URL"}
    assert set(behaviour["hidden_fields"]) == {"login", "port", "schema"}
    (conn_type,) = get_provider_info()["connection-types"]
    assert conn_type["ui-field-behaviour"] == UI_FIELD_BEHAVIOUR
    assert conn_type["conn-fields"] == CONN_FIELDS
    widgets = VantaxHook.get_connection_form_widgets()
    if FORM_FROM_WIDGETS and importlib.util.find_spec("flask_appbuilder") is not None:
        assert set(widgets) == set(CONN_FIELDS)
    else:
        assert widgets == {}  # no FAB stack: no widgets, and no error


def test_the_connection_is_read_with_the_async_lookup_of_this_airflow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conn = {
        "conn_type": "vantax",
        "host": "http://127.0.0.1:8040",
        "password": "vx_test_compat",
        "extra": {"timeout": 7, "default_from_phone_number_id": "pn_1"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_VANTAX_COMPAT", json.dumps(conn))
    settings = asyncio.run(VantaxHook("vantax_compat").aget_settings())
    assert (settings.base_url, settings.api_key, settings.timeout) == (
        "http://127.0.0.1:8040",
        "vx_test_compat",
        7.0,
    )
    assert settings.default_from_phone_number_id == "pn_1"
