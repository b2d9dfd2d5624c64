"""``make demo``: run the example DAGs against a local Vantax emulator and show what was sent."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def airflow_env(home: Path, connection: dict[str, str], logging_level: str = "WARNING") -> dict[str, str]:
    """The environment of an Airflow process of its own: ``home`` (SQLite), no outside Airflow setting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "VANTAX"))}
    env.update(connection)
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": logging_level,
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p),
    })  # fmt: skip
    return env
