"""Connection form widgets for Airflow versions that read them from the hook (3.1)."""

from __future__ import annotations

from typing import Any


def connection_form_widgets() -> dict[str, Any]:
    try:
        from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
        from flask_babel import lazy_gettext
        from wtforms import IntegerField, StringField
        from wtforms.validators import NumberRange, Optional
    except ImportError:
        # Without the FAB stack the UI takes the fields from the provider info's conn-fields.
        return {}
    return {
        "timeout": IntegerField(
            lazy_gettext("Timeout"),
            widget=BS3TextFieldWidget(),
            validators=[Optional(strip_whitespace=True), NumberRange(min=1)],
            description="Optional. Seconds to wait for an answer from Vantax (default 30).",
        ),
        "max_retries": IntegerField(
            lazy_gettext("Max retries"),
            widget=BS3TextFieldWidget(),
            validators=[Optional(strip_whitespace=True), NumberRange(min=0)],
            description="Optional. How often a request that is safe to repeat is retried (default 5).",
        ),
        "default_from_phone_number_id": StringField(
            lazy_gettext("Default sender number id"),
            widget=BS3TextFieldWidget(),
            description="Optional. The phone number id SMS and WhatsApp messages are sent from.",
        ),
        "dashboard_url": StringField(
            lazy_gettext("Dashboard URL"),
            widget=BS3TextFieldWidget(),
            description="Optional. Link to a conversation; {conversation_id} is replaced.",
        ),
    }
