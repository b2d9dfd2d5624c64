"""Provider metadata read by Airflow's ProvidersManager (the ``apache_airflow_provider`` entry point)."""

from __future__ import annotations

from typing import Any

UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["login", "port", "schema"],
    "relabeling": {"password": "API key", "host": "Base URL"},
    "placeholders": {
        "password": "vx_live_...",
        "host": "https://api.vantaxai.com",
        "timeout": "30",
        "extra": '{"default_from_phone_number_id": "pn_..."}',
    },
}

CONN_FIELDS: dict[str, Any] = {
    "timeout": {
        "label": "Timeout",
        "schema": {"type": ["number", "null"], "exclusiveMinimum": 0},
        "description": "Optional. Seconds to wait for an answer from Vantax (default 30).",
    },
    "max_retries": {
        "label": "Max retries",
        "schema": {"type": ["integer", "null"], "minimum": 0},
        "description": "Optional. How often a request that is safe to repeat is retried (default 5).",
    },
    "default_from_phone_number_id": {
        "label": "Default sender number id",
        "schema": {"type": ["string", "null"]},
        "description": "Optional. The phone number id SMS and WhatsApp messages are sent from by default.",
    },
    "dashboard_url": {
        "label": "Dashboard URL",
        "schema": {"type": ["string", "null"]},
        "description": "Optional. A conversation link in the dashboard; {conversation_id} is replaced.",
    },
}


def get_provider_info() -> dict[str, Any]:
    from vantax_provider import __version__

    return {
        "package-name": "airflow-provider-vantax",
        "name": "Vantax",
        # Plain text: `airflow providers list` prints it with only backquotes, _, <, > and the
        # final period taken out (an RST link would show as "Vantax https://...").
        "description": "Vantax omnichannel messaging: SMS, WhatsApp, Messenger, Instagram and email.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Vantax",
                "external-doc-url": "https://vantaxai.com/",
                "tags": ["service"],
            }
        ],
        "hooks": [{"integration-name": "Vantax", "python-modules": ["vantax_provider.hooks.vantax"]}],
        "operators": [
            {
                "integration-name": "Vantax",
                "python-modules": [
                    "vantax_provider.operators.vantax",
                    "vantax_provider.operators.vantax_bulk",
                ],
            }
        ],
        "sensors": [{"integration-name": "Vantax", "python-modules": ["vantax_provider.sensors.vantax"]}],
        "triggers": [{"integration-name": "Vantax", "python-modules": ["vantax_provider.triggers.vantax"]}],
        "notifications": ["vantax_provider.notifications.vantax.VantaxNotifier"],
        "connection-types": [
            {
                "hook-class-name": "vantax_provider.hooks.vantax.VantaxHook",
                "hook-name": "Vantax",
                "connection-type": "vantax",
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
                "conn-fields": CONN_FIELDS,
            }
        ],
        "extra-links": ["vantax_provider.operators.vantax.VantaxConversationLink"],
    }
