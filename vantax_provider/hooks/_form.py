"""Connection form widgets for Airflow versions that read them from the hook (3.1)."""

from __future__ import annotations

from typing import Any

from vantax_provider.get_provider_info import CONN_FIELDS


def connection_form_widgets() -> dict[str, Any]:
    try:
        from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
        from flask_babel import lazy_gettext
        from wtforms import IntegerField, StringField
        from wtforms.validators import NumberRange, Optional
    except ImportError:
        # Without the FAB stack the UI takes the fields from the provider info's conn-fields.
        return {}
    # Labels and help texts are CONN_FIELDS' (what Airflow 3.2+ shows); only the field kinds live here.
    kinds: dict[str, tuple[Any, list[Any]]] = {
        "timeout": (IntegerField, [Optional(strip_whitespace=True), NumberRange(min=1)]),
        "max_retries": (IntegerField, [Optional(strip_whitespace=True), NumberRange(min=0)]),
        "default_from_phone_number_id": (StringField, []),
        "dashboard_url": (StringField, []),
    }
    return {
        name: field(
            lazy_gettext(CONN_FIELDS[name]["label"]),
            widget=BS3TextFieldWidget(),
            validators=validators,
            description=CONN_FIELDS[name]["description"],
        )
        for name, (field, validators) in kinds.items()
    }
