"""
The examples under ``airflow dags test``, set up as the README says and with Airflow's default configuration.

The connection is stored with ``airflow connections add`` (in the metadata DB, not an
``AIRFLOW_CONN_...`` variable) and ``load_examples`` keeps Airflow's default (True), as in a
fresh ``airflow.cfg``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from vantax_dagtest import REPO

from vantax_provider.emulator.testing import running_emulator

LOAD_EXAMPLES = "AIRFLOW__CORE__LOAD_EXAMPLES"  # unset: Airflow's default, True


def _airflow(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "airflow", *args], env=env, capture_output=True, text=True, timeout=600
    )


def _user_home(airflow_db: Path, tmp_path: Path) -> dict[str, str]:
    """A home of its own with the examples as its DAGs folder, Airflow's defaults, no test mode."""
    home = tmp_path / "home"
    shutil.copytree(REPO / "example_dags", home / "dags", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(airflow_db, home / "airflow.db")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AIRFLOW_CONN_") and k not in {"AIRFLOW__CORE__UNIT_TEST_MODE", LOAD_EXAMPLES}
    }
    env.update({
        "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
    })  # fmt: skip
    return env


@pytest.mark.timeout(600)
def test_pipeline_alert_with_a_stored_connection(airflow_db: Path, tmp_path: Path) -> None:
    """The DAG-level success alert is sent, and Airflow's example discovery finds the provider quietly."""
    env = _user_home(airflow_db, tmp_path)
    with running_emulator() as emu:
        added = _airflow(
            "connections", "add", "vantax_default", "--conn-type", "vantax",
            "--conn-host", emu.url, "--conn-password", emu.api_key, env=env,
        )  # fmt: skip
        assert added.returncode == 0, added.stdout + added.stderr
        ran = _airflow("dags", "test", "example_vantax_pipeline_alert", env=env)
        output = ran.stdout + ran.stderr
        messages: list[dict[str, Any]] = emu.messages()
    assert ran.returncode == 0 and "state=success" in output, output[-3000:]
    problems = []
    contents = [m["body"]["content"] for m in messages]
    if len(contents) != 1 or "all tasks succeeded" not in contents[0]:
        errors = [line for line in output.splitlines() if "[error" in line]
        problems.append(f"the success alert was not sent once: {contents}; errors: {errors}")
    if "for example DAG discovery" in output:
        problems.append(next(line for line in output.splitlines() if "example DAG discovery" in line))
    assert problems == []
    assert emu.api_key not in output
