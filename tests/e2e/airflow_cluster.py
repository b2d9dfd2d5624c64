"""
A real, throw-away Airflow 3 deployment for end-to-end tests.

It starts ``airflow api-server`` (task runners reach the execution API there), ``scheduler``
(LocalExecutor), ``dag-processor`` and ``triggerer`` on loopback, with SQLite in a temporary
``AIRFLOW_HOME``, each in its own process group, and stops them all.  The metadata DB is read
directly (SQLite) for states, which is faster than the CLI and does not touch the processes.

Usage::

    with AirflowCluster(home, dags_folder, env={"AIRFLOW_CONN_X": ...}) as cluster:
        cluster.wait_for_dag("my_dag")
        run_id = cluster.trigger("my_dag", conf={...})
        assert cluster.wait_for_run("my_dag", run_id, timeout=120) == "success"
        cluster.task_instances("my_dag", run_id)
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
FINISHED_RUN_STATES = frozenset({"success", "failed"})


class ClusterError(RuntimeError):
    """A component did not start, died, or a wait ran out; the message carries the logs' tails."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process_group(process: subprocess.Popen[bytes], sig: int, grace: float) -> None:
    """Signal a process group, wait ``grace`` seconds, then kill it; by pid, never by name."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    # Children (task runners, gunicorn/uvicorn workers) may outlive the leader: sweep the group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


@dataclass
class Component:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes] = field(repr=False)


class AirflowCluster:
    """
    Start and stop a local Airflow deployment and query its metadata DB.

    :param home: an empty directory for AIRFLOW_HOME (the SQLite DB and logs go there).
    :param dags_folder: the DAGs folder the dag-processor parses.
    :param env: extra environment for every component (e.g. ``AIRFLOW_CONN_*``).
    :param parallelism: LocalExecutor worker processes.
    """

    def __init__(
        self, home: Path, dags_folder: Path, env: Mapping[str, str] | None = None, parallelism: int = 4
    ) -> None:
        self.home = Path(home)
        self.dags_folder = Path(dags_folder)
        self.port = free_port()
        self.db_path = self.home / "airflow.db"
        self.components: dict[str, Component] = {}
        #: Every TI state seen while waiting: {(dag_id, run_id, task_id, map_index): [state, ...]}.
        self.observed: dict[tuple[str, str, str, int], list[str | None]] = {}
        base = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        repo = str(Path(__file__).resolve().parents[2])
        self.env = {
            **base,
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(parallelism),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.port}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.db_path}",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{self.port}",
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API_AUTH__JWT_SECRET": uuid.uuid4().hex,
            # The simple auth manager hands out admin tokens without a password (loopback only).
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__SCHEDULER__PARSING_CLEANUP_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "1",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.home / "logs"),
            # Airflow binds its log servers to all interfaces; free ports at least avoid clashes.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "PYTHONPATH": os.pathsep.join(p for p in (repo, base.get("PYTHONPATH")) if p),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }

    # -- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> AirflowCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None:
            sys.stderr.write(self.dump_logs())
        self.stop()

    def airflow(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run one ``airflow`` CLI command with the cluster's environment."""
        result = subprocess.run(
            [sys.executable, "-m", "airflow", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise ClusterError(
                f"airflow {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}"
            )
        return result

    def start(self, timeout: float = 180) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "logs").mkdir(exist_ok=True)
        self.airflow("db", "migrate", timeout=timeout)
        for name in COMPONENTS:
            self.start_component(name)
        self._wait_for_api(timeout)

    def start_component(self, name: str) -> Component:
        """Start (or restart) one component in its own process group."""
        args = [name, "--port", str(self.port), "--host", "127.0.0.1"] if name == "api-server" else [name]
        log_path = self.home / "logs" / f"{name}.log"
        log_file = log_path.open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "airflow", *args],
            env=self.env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.home,
        )  # fmt: skip
        self.components[name] = Component(name, process, log_path, log_file)
        return self.components[name]

    def stop_component(self, name: str, grace: float = 10.0) -> None:
        component = self.components.pop(name, None)
        if component is None:
            return
        stop_process_group(component.process, signal.SIGTERM, grace)
        component.log_file.close()

    def stop(self) -> None:
        for name in reversed(list(self.components)):
            self.stop_component(name)

    def _wait_for_api(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.port}/api/v2/monitor/health"
        while time.monotonic() < deadline:
            self.check_alive()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            time.sleep(0.5)
        raise ClusterError(f"the api-server did not answer on {url} within {timeout}s\n{self.dump_logs()}")

    def check_alive(self) -> None:
        dead = {n: c.process.returncode for n, c in self.components.items() if c.process.poll() is not None}
        if dead:
            raise ClusterError(f"Airflow component(s) exited: {dead}\n{self.dump_logs()}")

    def pids(self) -> dict[str, int]:
        return {name: c.process.pid for name, c in self.components.items()}

    def logs(self) -> dict[str, str]:
        return {n: c.log_path.read_text(errors="replace") for n, c in self.components.items()}

    def dump_logs(self, tail: int = 80) -> str:
        parts = []
        for path in sorted((self.home / "logs").glob("*.log")):
            lines = path.read_text(errors="replace").splitlines()[-tail:]
            parts.append(f"----- {path.name} (last {len(lines)} lines) -----\n" + "\n".join(lines))
        for path in sorted((self.home / "logs").glob("dag_id=*/**/*.log")):
            lines = path.read_text(errors="replace").splitlines()[-tail:]
            parts.append(f"----- task log {path.relative_to(self.home / 'logs')} -----\n" + "\n".join(lines))
        return "\n".join(parts) + "\n"

    # -- the metadata DB ----------------------------------------------------------------------

    @contextlib.contextmanager
    def db(self) -> Iterator[sqlite3.Connection]:
        connection = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
        try:
            yield connection
        finally:
            connection.close()

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        for attempt in range(20):
            try:
                with self.db() as connection:
                    return connection.execute(sql, params).fetchall()
            except sqlite3.OperationalError as exc:  # "database is locked" while a writer commits
                if "locked" not in str(exc) or attempt == 19:
                    raise
                time.sleep(0.1)
        raise AssertionError("unreachable")

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> None:
        """Until the dag-processor has parsed and serialised the DAG."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            if self.query("SELECT 1 FROM serialized_dag WHERE dag_id = ?", dag_id):
                return
            time.sleep(0.5)
        errors = self.query("SELECT filename, stacktrace FROM import_error")
        raise ClusterError(
            f"DAG {dag_id} was not parsed within {timeout}s; import errors: {errors}\n{self.dump_logs()}"
        )

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None, run_id: str | None = None) -> str:
        run_id = run_id or f"e2e__{uuid.uuid4().hex[:12]}"
        self.airflow("dags", "trigger", dag_id, "--run-id", run_id, "--conf", json.dumps(dict(conf or {})))
        return run_id

    def trigger_rest(
        self,
        dag_id: str,
        conf: Mapping[str, Any] | None = None,
        run_id: str | None = None,
        logical_date: str | None = None,
    ) -> str:
        """Trigger a run through the REST API, as the UI does: ``logical_date`` null by default."""
        run_id = run_id or f"rest__{uuid.uuid4().hex[:12]}"
        base = f"http://127.0.0.1:{self.port}"
        token = httpx.get(f"{base}/auth/token", timeout=30).json()["access_token"]
        answer = httpx.post(
            f"{base}/api/v2/dags/{dag_id}/dagRuns",
            json={"dag_run_id": run_id, "logical_date": logical_date, "conf": dict(conf or {})},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        if answer.status_code != 200:
            raise ClusterError(f"POST dagRuns of {dag_id}: {answer.status_code} {answer.text[:2000]}")
        return run_id

    def run_state(self, dag_id: str, run_id: str) -> str | None:
        rows = self.query("SELECT state FROM dag_run WHERE dag_id = ? AND run_id = ?", dag_id, run_id)
        return rows[0][0] if rows else None

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """task_id, map_index, state and try_number of each task instance of the run."""
        rows = self.query(
            "SELECT task_id, map_index, state, try_number FROM task_instance WHERE dag_id = ? AND run_id = ? "
            "ORDER BY task_id, map_index",
            dag_id, run_id,
        )  # fmt: skip
        return [dict(zip(("task_id", "map_index", "state", "try_number"), row, strict=True)) for row in rows]

    def task_tries(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Earlier tries kept in task_instance_history: task_id, map_index, try_number, state."""
        rows = self.query(
            "SELECT task_id, map_index, try_number, state FROM task_instance_history "
            "WHERE dag_id = ? AND run_id = ? ORDER BY task_id, map_index, try_number",
            dag_id, run_id,
        )  # fmt: skip
        return [dict(zip(("task_id", "map_index", "try_number", "state"), row, strict=True)) for row in rows]

    def _observe(self, dag_id: str, run_id: str) -> None:
        for ti in self.task_instances(dag_id, run_id):
            seen = self.observed.setdefault((dag_id, run_id, ti["task_id"], ti["map_index"]), [])
            if not seen or seen[-1] != ti["state"]:
                seen.append(ti["state"])

    def states_seen(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> list[str | None]:
        return list(self.observed.get((dag_id, run_id, task_id, map_index), []))

    def wait_for_run(
        self, dag_id: str, run_id: str, timeout: float = 180, states: frozenset[str] = FINISHED_RUN_STATES
    ) -> str:
        """Poll until the run reaches one of ``states``, recording every TI state seen on the way."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            self._observe(dag_id, run_id)
            state = self.run_state(dag_id, run_id)
            if state in states:
                return state
            time.sleep(0.2)
        raise ClusterError(
            f"run {run_id} of {dag_id} did not finish within {timeout}s "
            f"(state {self.run_state(dag_id, run_id)}, TIs {self.task_instances(dag_id, run_id)})\n"
            + self.dump_logs()
        )

    def wait_for_task_state(
        self, dag_id: str, run_id: str, task_id: str, state: str, map_index: int = -1, timeout: float = 120
    ) -> None:
        """Until one task instance is in ``state`` (e.g. ``running``, to kill its process)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            self._observe(dag_id, run_id)
            if state in self.states_seen(dag_id, run_id, task_id, map_index)[-1:]:
                return
            time.sleep(0.1)
        raise ClusterError(
            f"{task_id} of {run_id} never reached {state} within {timeout}s\n{self.dump_logs()}"
        )
