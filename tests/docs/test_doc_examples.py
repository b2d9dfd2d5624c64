"""
Every ```python block in README.md and docs/ runs as written.

Each block is written as a file into the DAGs folder and imported by Airflow's DagBag (so a
block that is not a whole module, uses an undefined name or lacks an import fails here). Every
DAG a block defines is then run with ``dag.test()`` against the emulator, with a ``vantax_default``
connection that has no extras, and every task must succeed. Blocks that include a file from
example_dags/ (``--8<--``) are left out: those files are run by tests/example_dags/ and
tests/bulk/.

The README's own first steps (the emulator, ``airflow connections add``, then ``airflow dags
test``) and the "try it without an account" path of docs/getting-started.md are run as a user
would run them, in a home of their own.
"""

from __future__ import annotations

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
        # Examples share DAG ids (the README's and the getting-started page's vantax_hello): left in
        # the shared DAGs folder, every later parse of it logs a duplicate-id error.
        path.unlink()
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


def _shell_commands(page: Path) -> list[str]:
    """The page's shell lines, continuations joined and comments dropped."""
    lines = []
    for body in blocks(page, "bash"):
        for line in body.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def _walkthrough(page: Path, airflow_db: Path, tmp_path: Path) -> tuple[dict[str, Any], str]:
    """Run the page's emulator, connection and ``airflow dags test`` commands as a user would.

    A home of its own (a copy of the migrated metadata DB, where ``airflow connections`` writes),
    a DAGs folder holding only the page's DAG, and not Airflow's unit-test mode.  The only change
    made to the commands: the emulator's port, swapped for a free one.  Returns the one message
    the emulator created and the output of ``airflow dags test``.
    """
    import shutil

    commands = _shell_commands(page)
    emulator_cmd = next(c for c in commands if "vantax_provider.emulator" in c)
    first = commands.index(emulator_cmd)
    # The connection commands of the emulator's block, then its `airflow dags test`.
    test_at = next(i for i, c in enumerate(commands) if i > first and c.startswith("airflow dags test"))
    conn_cmds = [c for c in commands[first + 1 : test_at] if c.startswith("airflow connections")]
    assert any(" add " in c for c in conn_cmds), conn_cmds
    port = str(re.search(r"--port (\d+)", emulator_cmd)[1])  # type: ignore[index]
    key = str(re.search(r"--api-key (\S+)", emulator_cmd)[1])  # type: ignore[index]
    queued = re.search(r"--queued-seconds (\S+)", emulator_cmd)
    [dag_source] = blocks(page, "python")
    dag_id = re.search(r'DAG\(\s*"(\w+)"', dag_source)[1]  # type: ignore[index]

    home = tmp_path / "home"
    (home / "dags").mkdir(parents=True)
    (home / "dags" / f"{dag_id}.py").write_text(dag_source)
    shutil.copy(airflow_db, home / "airflow.db")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AIRFLOW_CONN_") and k != "AIRFLOW__CORE__UNIT_TEST_MODE"
    }
    env.update({
        "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
    })  # fmt: skip
    with running_emulator(api_key=key, queued_seconds=float(queued[1]) if queued else 0.05) as emu:
        free = ":" + emu.url.rsplit(":", 1)[1]
        for command in conn_cmds:
            ran = _airflow(*shlex.split(command.replace(f":{port}", free))[1:], env=env)
            # `connections delete` of a connection that is not there fails, harmlessly, as for a user.
            assert ran.returncode == 0 or " delete " in command, (command, ran.stdout + ran.stderr)
        test_cmd = commands[test_at]
        ran = _airflow(*shlex.split(test_cmd)[1:], env=env)
        output = ran.stdout + ran.stderr
        assert ran.returncode == 0 and "state=success" in output, output[-3000:]
        [message] = emu.messages()
    assert message["conversation_id"] == "conv_123" and message["status"] == "delivered"
    assert message["body"]["content"].startswith(f"Hello from {dag_id}, run manual__")
    return message, output


@pytest.mark.timeout(900)  # two Airflow CLI processes: about a minute on an idle machine
def test_readme_first_steps_run_against_the_emulator(airflow_db: Path, tmp_path: Path) -> None:
    """The README's emulator command, its `airflow connections add` and `airflow dags test`, as written.

    The emulator delays delivery as the README says, so the task defers and `airflow dags test`
    runs the trigger in-process: on Airflow 3.3.2 that trigger could not find a connection stored
    in the metadata DB until the hook asked the synchronous lookup on "isn't defined".
    """
    _, output = _walkthrough(REPO / "README.md", airflow_db, tmp_path)
    assert "[DAG TEST] running trigger in line" in output, "the task did not defer: nothing was tested"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_getting_started_without_an_account(airflow_db: Path, tmp_path: Path) -> None:
    """docs/getting-started.md: start the emulator, replace the connection, run the page's DAG."""
    _, output = _walkthrough(REPO / "docs" / "getting-started.md", airflow_db, tmp_path)
    assert "[DAG TEST] running trigger in line" in output, "the task did not defer: nothing was tested"
