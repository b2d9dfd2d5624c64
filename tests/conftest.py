"""
Shared fixtures.  Airflow reads its configuration at import time, so the environment is set
here, before any test module imports Airflow: a throw-away AIRFLOW_HOME with SQLite, no
example DAGs, and nothing from the user's own Airflow set-up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

_HOME = Path(tempfile.mkdtemp(prefix="vantax-airflow-home-"))
os.environ["AIRFLOW_HOME"] = str(_HOME)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(_HOME / "dags")
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_HOME / 'airflow.db'}"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
os.environ.pop("AIRFLOW_CONN_VANTAX_DEFAULT", None)

pytest_plugins = ["vantax_provider.emulator.pytest_plugin"]

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def airflow_home() -> Path:
    return _HOME


@pytest.fixture(scope="session")
def airflow_db(airflow_home: Path) -> Path:
    """A migrated SQLite metadata database, made once per session for tests that need one."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        capture_output=True,
        env=os.environ.copy(),
    )
    return airflow_home / "airflow.db"


@pytest.fixture
def vantax_conn(vantax_emulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The ``vantax_default`` connection, pointing at the running emulator."""
    for name, value in vantax_emulator.airflow_env(conn_id="vantax_default").items():
        monkeypatch.setenv(name, value)
    yield "vantax_default"


@pytest.fixture
def dag_env(airflow_db: Path, vantax_conn: str, vantax_emulator):  # type: ignore[no-untyped-def]
    """A migrated DB and ``vantax_default`` pointing at a freshly reset emulator; returns the emulator."""
    return vantax_emulator


@pytest.fixture
def conn_extra(vantax_emulator, monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:  # type: ignore[no-untyped-def]
    """Re-point ``vantax_default`` at the emulator with connection extras (e.g. max_retries=0)."""

    def apply(**extra: object) -> None:
        conn = json.loads(vantax_emulator.connection_json())
        conn["extra"] = extra
        monkeypatch.setenv("AIRFLOW_CONN_VANTAX_DEFAULT", json.dumps(conn))

    return apply


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests of Airflow 3.3 features (task_state_store) on older Airflow versions."""
    from importlib.metadata import version

    major_minor = tuple(int(p) for p in version("apache-airflow-core").split(".")[:2])
    if major_minor >= (3, 3):
        return
    skip = pytest.mark.skip(reason=f"needs Airflow >= 3.3; this is {version('apache-airflow-core')}")
    for item in items:
        if "airflow_3_3" in item.keywords:
            item.add_marker(skip)


#: The deferral settle time (``[vantax] deferral_settle_seconds``) guards against a race in Airflow's
#: scheduler.  ``dag.test()`` has none, and the triggers do not hold there; a test that runs a
#: deferred task's trigger itself would wait 10 s.  Tests marked ``real_settle`` and every
#: end-to-end test keep the product default.
SETTLE_ENV = "AIRFLOW__VANTAX__DEFERRAL_SETTLE_SECONDS"


@pytest.fixture(autouse=True)
def _no_settle_in_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.node.get_closest_marker("e2e") or request.node.get_closest_marker("real_settle"):
        monkeypatch.delenv(SETTLE_ENV, raising=False)
    else:
        monkeypatch.setenv(SETTLE_ENV, "0")
