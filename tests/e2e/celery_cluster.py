"""
A production-shaped, throw-away Airflow 3 deployment: PostgreSQL, Redis and the CeleryExecutor.

Everything the SQLite harness (:mod:`airflow_cluster`) starts, plus:

* a private PostgreSQL cluster (``initdb`` + ``postgres`` of Debian's ``postgresql`` package) in a
  temporary folder, on a free loopback port; run as the ``postgres`` user when we are root, since
  PostgreSQL refuses to run as root;
* ``redis-server`` as the Celery broker, on a free loopback port, persisting nothing;
* two ``airflow celery worker`` processes, each reporting its own host name to Airflow (the
  ``VANTAX_E2E_WORKER`` environment variable read by :func:`_worker_name.worker_name`), so the
  metadata DB's ``task_instance.hostname`` tells which worker ran a task.

Every server runs in its own process group and is stopped by its pid.  The metadata DB is read
with psycopg2.

Usage::

    with CeleryCluster(home, dags_folder, env={...}) as cluster:
        cluster.wait_for_dag("my_dag")
        run_id = cluster.trigger("my_dag")
        cluster.wait_for_run("my_dag", run_id)
        cluster.kill_worker("worker-a")      # SIGKILL the worker's whole process group
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from airflow_cluster import (
    COMPONENTS,
    AirflowCluster,
    ClusterError,
    Component,
    free_port,
    stop_process_group,
)

WORKERS = ("worker-a", "worker-b")
POSTGRES_USER = "postgres"


def find_postgres_bin(name: str) -> str | None:
    """``initdb``/``postgres`` from PATH or Debian's versioned folder (not on PATH there)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]), reverse=True
    )
    return candidates[0] if candidates else None


def missing_servers() -> list[str]:
    """What this machine lacks to run the deployment (empty when everything is there)."""
    missing = [name for name in ("initdb", "postgres") if find_postgres_bin(name) is None]
    if shutil.which("redis-server") is None:
        missing.append("redis-server")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(POSTGRES_USER)
        except KeyError:
            missing.append(f"the {POSTGRES_USER!r} user (PostgreSQL refuses to run as root)")
    return missing


class PostgresServer:
    """
    A private PostgreSQL cluster on a free loopback port, in a temporary folder.

    :param root: None for a new temporary folder (made readable by the ``postgres`` user).
    """

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root or tempfile.mkdtemp(prefix="vantax-pg-"))
        self.port = free_port()
        self.data = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._user: dict[str, Any] = {}
        if os.geteuid() == 0:
            entry = pwd.getpwnam(POSTGRES_USER)
            self._user = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
            os.chown(self.root, entry.pw_uid, entry.pw_gid)

    def url(self, database: str = "airflow", driver: str = "postgresql+psycopg2") -> str:
        return f"{driver}://{POSTGRES_USER}@127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float = 60) -> None:
        initdb, postgres = find_postgres_bin("initdb"), find_postgres_bin("postgres")
        if initdb is None or postgres is None:
            raise ClusterError("PostgreSQL's initdb/postgres are not installed")
        done = subprocess.run(
            [initdb, "-D", str(self.data), "-U", POSTGRES_USER, "-A", "trust", "-E", "UTF8", "--locale=C",
             "--no-sync"],
            capture_output=True, text=True, cwd=self.root, timeout=timeout, **self._user,
        )  # fmt: skip
        if done.returncode != 0:
            raise ClusterError(f"initdb failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        log = self.log_path.open("ab")
        # Durability off: a test cluster, thrown away at the end.  More connections than the default
        # 100: two Celery workers, their task processes, the scheduler and the api-server all pool.
        self.process = subprocess.Popen(
            [postgres, "-D", str(self.data), "-p", str(self.port), "-k", str(self.root),
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
             "-c", "full_page_writes=off", "-c", "max_connections=300"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.root, **self._user,
        )  # fmt: skip
        log.close()
        self._wait(timeout)
        with self.connect("postgres") as conn:
            conn.autocommit = True
            conn.cursor().execute("CREATE DATABASE airflow")

    def _wait(self, timeout: float) -> None:
        import psycopg2

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise ClusterError(f"postgres exited {self.process.returncode}:\n{self.tail()}")
            try:
                psycopg2.connect(
                    host="127.0.0.1", port=self.port, user=POSTGRES_USER, dbname="postgres"
                ).close()
                return
            except psycopg2.OperationalError:
                time.sleep(0.2)
        raise ClusterError(f"postgres did not accept connections within {timeout}s:\n{self.tail()}")

    @contextlib.contextmanager
    def connect(self, database: str = "airflow") -> Iterator[Any]:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=POSTGRES_USER, dbname=database)
        try:
            yield conn
        finally:
            conn.close()

    def tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process is not None:
            stop_process_group(self.process, signal.SIGINT, 20)  # SIGINT: PostgreSQL's "fast" shutdown
            self.process = None
        shutil.rmtree(self.root, ignore_errors=True)


class RedisServer:
    """``redis-server`` on a free loopback port, persisting nothing."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.port = free_port()
        self.log_path = self.root / "redis.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 30) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        binary = shutil.which("redis-server")
        if binary is None:
            raise ClusterError("redis-server is not installed")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.root), "--logfile", str(self.log_path), "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise ClusterError(f"redis-server exited {self.process.returncode}")
                with contextlib.suppress(redis.RedisError):
                    if client.ping():
                        return
                time.sleep(0.1)
        finally:
            client.close()
        raise ClusterError(f"redis-server did not answer within {timeout}s")

    def stop(self) -> None:
        if self.process is not None:
            stop_process_group(self.process, signal.SIGTERM, 10)
            self.process = None


class CeleryCluster(AirflowCluster):
    """
    Airflow on PostgreSQL with the CeleryExecutor, a Redis broker and two Celery workers.

    :param home: an empty directory for AIRFLOW_HOME (logs go there; the DB is PostgreSQL's).
    :param dags_folder: the DAGs folder the dag-processor parses.
    :param env: extra environment for every component (e.g. ``AIRFLOW_CONN_*`` or a short
        ``AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT``).
    :param worker_concurrency: task slots per Celery worker.
    :param workers: the workers' names (each becomes its tasks' ``hostname``).
    """

    def __init__(
        self,
        home: Path,
        dags_folder: Path,
        env: Mapping[str, str] | None = None,
        worker_concurrency: int = 3,
        workers: Sequence[str] = WORKERS,
    ) -> None:
        super().__init__(home, dags_folder, env=None, parallelism=32)
        self.postgres = PostgresServer()
        self.redis = RedisServer(self.home / "redis")
        self.workers = tuple(workers)
        self.worker_concurrency = worker_concurrency
        here = str(Path(__file__).resolve().parent)
        self.env.update(
            {
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.postgres.url(),
                "AIRFLOW__CELERY__BROKER_URL": self.redis.url,
                "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + self.postgres.url(),
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(worker_concurrency),
                "AIRFLOW__CELERY__SYNC_PARALLELISM": "1",
                # Task processes talk to the api-server; on a loaded 2-core box 5 s is too short.
                "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
                # The test talks to the REST API (triggering by CLI costs an Airflow import each time).
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                # Each worker names itself through VANTAX_E2E_WORKER; other components keep the FQDN.
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "_worker_name.worker_name",
                "PYTHONPATH": os.pathsep.join([here, self.env["PYTHONPATH"]]),
                **(env or {}),
            }
        )

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 240) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "logs").mkdir(exist_ok=True)
        self.postgres.start()
        self.redis.start()
        self.airflow("db", "migrate", timeout=timeout)
        # The api-server first: a task that a worker starts before it answers fails at once.
        self.start_component("api-server")
        self._wait_for_api(timeout)
        for name in (*(c for c in COMPONENTS if c != "api-server"), *self.workers):
            self.start_component(name)
        for name in self.workers:
            self.wait_for_worker(name, timeout)

    def start_component(self, name: str) -> Component:
        if name not in self.workers:
            return super().start_component(name)
        log_path = self.home / "logs" / f"{name}.log"
        log_file = log_path.open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "airflow", "celery", "worker",
             "--concurrency", str(self.worker_concurrency), "--celery-hostname", f"{name}@%h",
             "--skip-serve-logs"],
            env={**self.env, "VANTAX_E2E_WORKER": name}, stdout=log_file, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=self.home,
        )  # fmt: skip
        self.components[name] = Component(name, process, log_path, log_file)
        return self.components[name]

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None, run_id: str | None = None) -> str:
        """Trigger a run through the REST API (no CLI process to start)."""
        import uuid

        import httpx

        run_id = run_id or f"e2e__{uuid.uuid4().hex[:12]}"
        from datetime import datetime, timezone

        # A logical date, as the UI's trigger form sets by default ({{ ds }} needs one).
        now = datetime.now(timezone.utc).isoformat()
        body = {"dag_run_id": run_id, "logical_date": now, "conf": dict(conf or {})}
        url = f"http://127.0.0.1:{self.port}/api/v2/dags/{dag_id}/dagRuns"
        response = httpx.post(url, json=body, timeout=120)
        if response.status_code >= 300:
            raise ClusterError(f"triggering {dag_id} answered {response.status_code}: {response.text[:2000]}")
        return run_id

    def wait_for_worker(self, name: str, timeout: float = 120) -> None:
        """Until the Celery worker logged that it is ready to take tasks."""
        deadline = time.monotonic() + timeout
        component = self.components[name]
        while time.monotonic() < deadline:
            self.check_alive()
            if b" ready." in component.log_path.read_bytes():
                return
            time.sleep(0.5)
        raise ClusterError(f"Celery worker {name} was not ready within {timeout}s\n{self.dump_logs()}")

    def kill_worker(self, name: str) -> list[int]:
        """
        SIGKILL a worker and every process under it, as a lost machine would: the pids killed.

        Not only its process group: Airflow starts each task process in a group of its own
        (``setpgid``), so killing the worker's group alone would leave its tasks running.
        """
        import psutil

        component = self.components.pop(name)
        try:
            tree = [
                component.process.pid,
                *(c.pid for c in psutil.Process(component.process.pid).children(True)),
            ]
        except psutil.NoSuchProcess:
            tree = [component.process.pid]
        for pid in tree:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(component.process.pid, signal.SIGKILL)
        component.process.wait(30)
        component.log_file.close()
        for pid in tree[1:]:
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).wait(10)  # reaped by init once their parent is gone
        return tree

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            self.redis.stop()
            self.postgres.stop()

    def dump_logs(self, tail: int = 80) -> str:
        return super().dump_logs(tail) + f"----- postgres -----\n{self.postgres.tail()}\n"

    # -- the metadata DB ----------------------------------------------------------------------

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """The SQLite harness's queries, with ``?`` placeholders, run on PostgreSQL."""
        with self.postgres.connect() as conn:
            cursor = conn.cursor()
            cursor.execute(sql.replace("?", "%s"), params)
            rows: list[tuple[Any, ...]] = cursor.fetchall()
            conn.rollback()
            return rows

    def task_hosts(self, dag_id: str, run_id: str, task_id: str) -> dict[int, tuple[str, int, int]]:
        """map_index -> (hostname, pid, try_number) of each task instance's latest try."""
        rows = self.query(
            "SELECT map_index, hostname, pid, try_number FROM task_instance "
            "WHERE dag_id = ? AND run_id = ? AND task_id = ?",
            dag_id, run_id, task_id,
        )  # fmt: skip
        return {int(m): (h, p, t) for m, h, p, t in rows}

    def xcom(
        self, dag_id: str, run_id: str, task_id: str, map_index: int = -1, key: str = "return_value"
    ) -> Any:
        import json

        rows = self.query(
            "SELECT value FROM xcom WHERE dag_id = ? AND run_id = ? AND task_id = ? AND map_index = ? "
            "AND key = ?",
            dag_id, run_id, task_id, map_index, key,
        )  # fmt: skip
        if not rows:
            return None
        value = rows[0][0]
        return json.loads(value) if isinstance(value, (str, bytes, bytearray, memoryview)) else value
