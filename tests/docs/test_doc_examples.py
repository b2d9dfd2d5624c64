"""
Every ```python block in README.md and docs/ runs as written.

Each block is written as a file into the DAGs folder and imported by Airflow's DagBag (so a
block that is not a whole module, uses an undefined name or lacks an import fails here). Every
DAG a block defines is then run with ``dag.test()`` against the emulator, with a ``vantax_default``
connection that has no extras, and every task must succeed. Blocks that include a file from
example_dags/ (``--8<--``) are left out: those files are run by tests/example_dags/ and
tests/operators/bulk/.

The README's own first steps (its connection command, then ``airflow dags test``) and the
"try it without an account" path of docs/getting-started.md are run as a user would run them.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from vantax_dagtest import REPO, dags_folder, task_states

from vantax_provider.emulator.testing import running_emulator

PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^```\s*$", re.MULTILINE | re.DOTALL)


def blocks(page: Path, lang: str) -> list[str]:
    return [m["body"] for m in FENCE.finditer(page.read_text()) if m["lang"] == lang]


def _python_blocks() -> list[Any]:
    found = []
    for page in PAGES:
        for number, body in enumerate(blocks(page, "python"), start=1):
            if body.lstrip().startswith("--8<--"):
                continue  # included from example_dags/, tested there
            name = f"{page.relative_to(REPO).as_posix()}#{number}"
            found.append(pytest.param(name, body, id=name))
    return found


PYTHON_BLOCKS = _python_blocks()


def test_the_docs_have_python_examples() -> None:
    # The README, getting started, the sensor page and the bulk page each show one at least.
    pages = {param.values[0].split("#")[0] for param in PYTHON_BLOCKS}
    assert {"README.md", "docs/getting-started.md", "docs/sensors.md", "docs/operators/bulk-send.md"} <= pages


def _bag(path: Path) -> Any:
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow < 3.3
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]
    return DagBag(dag_folder=str(path), safe_mode=False)


@pytest.mark.parametrize(("name", "source"), PYTHON_BLOCKS)
def test_python_example_runs(name: str, source: str, dag_env: Any, tmp_path: Path) -> None:
    folder = dags_folder() / "doc_examples"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (re.sub(r"\W", "_", name) + ".py")
    path.write_text(source)
    cwd = Path.cwd()
    os.chdir(tmp_path)  # an example that writes a file writes it here
    try:
        bag = _bag(path)
        assert bag.import_errors == {}, f"{name} does not import: {bag.import_errors}"
        for dag in bag.dags.values():
            run = dag.test()
            states = task_states(run)
            assert states and all(state == "success" for state, _ in states.values()), (name, states)
            assert str(run.state) == "success", name
    finally:
        os.chdir(cwd)
    if bag.dags:
        # Each DAG example sends something; every message the emulator created reached a final state.
        created = dag_env.messages()
        assert created, f"{name}: no message reached the emulator"
        # A DAG that does not wait for delivery may end while its last message is still "sent".
        deadline = time.monotonic() + 10
        while not all(m["status"] == "delivered" for m in created) and time.monotonic() < deadline:
            time.sleep(0.1)
            created = dag_env.messages()
        assert all(m["status"] == "delivered" for m in created), [m["status"] for m in created]


def _airflow(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "airflow", *args], env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.timeout(900)  # one Airflow CLI process: well under a minute on an idle machine
def test_readme_first_steps_run_against_the_emulator(airflow_db: Path, tmp_path: Path) -> None:
    """The README's emulator command, its connection and `airflow dags test`, as written."""
    readme = REPO / "README.md"
    [dag_source] = blocks(readme, "python")
    commands = [
        line
        for body in blocks(readme, "bash")
        for line in body.replace("\\\n", " ").splitlines()
        if line.strip() and not line.lstrip().startswith(("#", "make", "pip"))
    ]
    emulator_cmd = next(c for c in commands if "vantax_provider.emulator" in c)
    exported = next(c for c in commands if c.startswith("export AIRFLOW_CONN_VANTAX_DEFAULT="))
    test_cmd = next(c for c in commands if c.startswith("airflow dags test"))
    port = str(re.search(r"--port (\d+)", emulator_cmd)[1])  # type: ignore[index]
    key = str(re.search(r"--api-key (\S+)", emulator_cmd)[1])  # type: ignore[index]
    conn = shlex.split(exported.removeprefix("export "))[0].split("=", 1)[1]

    dag_id = re.search(r'DAG\(\s*"(\w+)"', dag_source)[1]  # type: ignore[index]
    folder = tmp_path / "dags"  # a DAGs folder of its own: only the README's DAG
    folder.mkdir()
    (folder / f"{dag_id}.py").write_text(dag_source)
    # As a user runs it: not in Airflow's unit-test mode.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AIRFLOW_CONN_") and k != "AIRFLOW__CORE__UNIT_TEST_MODE"
    }
    env["AIRFLOW__CORE__DAGS_FOLDER"] = str(folder)
    with running_emulator(api_key=key) as emu:
        # The README's port, swapped for the free one the emulator took: the only change made.
        env["AIRFLOW_CONN_VANTAX_DEFAULT"] = conn.replace(f":{port}", ":" + emu.url.rsplit(":", 1)[1])
        ran = _airflow(*shlex.split(test_cmd)[1:], env=env)
        assert ran.returncode == 0, (ran.stdout + ran.stderr)[-3000:]
        [message] = emu.messages()
    assert message["conversation_id"] == "conv_123" and message["status"] == "delivered"
    assert message["body"]["content"].startswith(f"Hello from {dag_id}, run manual__")


def test_getting_started_without_an_account(airflow_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/getting-started.md: start the emulator, export the connection, run the page's DAG."""
    page = REPO / "docs" / "getting-started.md"
    shell = "\n".join(blocks(page, "bash"))
    key = str(re.search(r"vantax_provider\.emulator .*--api-key (\S+)", shell)[1])  # type: ignore[index]
    port = str(re.search(r"vantax_provider\.emulator .*--port (\d+)", shell)[1])  # type: ignore[index]
    exported = re.search(r"export AIRFLOW_CONN_VANTAX_DEFAULT='([^']+)'", shell)
    assert exported is not None
    [dag_source] = blocks(page, "python")
    dag_id = re.search(r'DAG\(\s*"(\w+)"', dag_source)[1]  # type: ignore[index]
    (dags_folder() / f"getting_started_{dag_id}.py").write_text(dag_source)
    with running_emulator(api_key=key) as emu:
        conn = exported[1].replace(f":{port}", ":" + emu.url.rsplit(":", 1)[1])
        json.loads(conn)
        monkeypatch.setenv("AIRFLOW_CONN_VANTAX_DEFAULT", conn)
        dag = _bag(dags_folder() / f"getting_started_{dag_id}.py").dags[dag_id]
        run = dag.test()
        assert {state for state, _ in task_states(run).values()} == {"success"}
        [message] = emu.messages()
    assert message["status"] == "delivered"
