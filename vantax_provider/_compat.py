"""Names that moved between Airflow 3.1 and 3.3, imported from wherever this Airflow has them."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSensorTimeout
else:
    try:
        from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSensorTimeout
    except ImportError:  # Airflow < 3.2 keeps them in core
        from airflow.exceptions import AirflowException, AirflowFailException, AirflowSensorTimeout

__all__ = ["AirflowException", "AirflowFailException", "AirflowSensorTimeout", "default_deferrable"]


def default_deferrable() -> bool:
    """Airflow's ``[operators] default_deferrable``, False when unset."""
    try:
        from airflow.sdk.configuration import conf
    except ImportError:  # Airflow < 3.2
        from airflow.configuration import conf
    return bool(conf.getboolean("operators", "default_deferrable", fallback=False))
