"""Names that moved between Airflow 3.1 and 3.3, imported from wherever this Airflow has them."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk.exceptions import (
        AirflowException,
        AirflowFailException,
        AirflowNotFoundException,
        AirflowSensorTimeout,
        AirflowSkipException,
    )
else:
    try:
        from airflow.sdk.exceptions import (
            AirflowException,
            AirflowFailException,
            AirflowNotFoundException,
            AirflowSensorTimeout,
            AirflowSkipException,
        )
    except ImportError:  # Airflow < 3.2 keeps them in core
        from airflow.exceptions import (
            AirflowException,
            AirflowFailException,
            AirflowNotFoundException,
            AirflowSensorTimeout,
            AirflowSkipException,
        )

__all__ = [
    "AirflowException",
    "AirflowFailException",
    "AirflowNotFoundException",
    "AirflowSensorTimeout",
    "AirflowSkipException",
    "aget_xcom",
    "airflow_home",
    "async_connection_lookup",
    "conf_seconds",
    "default_deferrable",
    "in_process_supervisor",
    "object_storage_path",
    "template_dag",
]


def _conf() -> Any:
    try:
        from airflow.sdk.configuration import conf
    except ImportError:  # Airflow < 3.2
        from airflow.configuration import conf
    return conf


def default_deferrable() -> bool:
    """Airflow's ``[operators] default_deferrable``, False when unset."""
    return bool(_conf().getboolean("operators", "default_deferrable", fallback=False))


def conf_seconds(section: str, key: str, fallback: float) -> float:
    """A non-negative number of seconds from Airflow's configuration (``AIRFLOW__SECTION__KEY`` too)."""
    value = _conf().get(section, key, fallback=None)
    if value is None or str(value).strip() == "":
        return fallback
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise AirflowException(f"[{section}] {key} must be a non-negative number of seconds, got {value!r}.")
    return seconds


def template_dag(dag: Any) -> Any:
    """
    The DAG whose Jinja environment renders a callback: ``dag`` itself, or the DAG parsed from its file.

    ``dag.test()`` hands DAG-level callbacks the scheduler's ``SerializedDAG``, which has no
    ``get_template_env()`` and has lost ``user_defined_macros``; the DAG processor hands them the
    DAG itself.  For the former this parses ``dag.fileloc`` again with ``DagBag`` (in
    ``airflow.dag_processing.dagbag`` on 3.3, ``airflow.models.dagbag`` on 3.1) and returns that DAG,
    so a callback renders with the DAG's search path, macros and undefined policy; it fails loudly
    when that is not possible rather than rendering with a bare environment.
    """
    if dag is None or hasattr(dag, "get_template_env"):
        return dag
    fileloc, dag_id = getattr(dag, "fileloc", None), getattr(dag, "dag_id", None)
    if not fileloc or not dag_id:
        raise AirflowException(
            f"Cannot render a callback of DAG {dag_id!r} with its Jinja environment: the context's DAG "
            f"({type(dag).__name__}) has neither get_template_env() nor a file to parse it from."
        )
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow < 3.2
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]
    bag = DagBag(dag_folder=fileloc, collect_dags=False)
    bag.process_file(fileloc, only_if_updated=False)  # type: ignore[no-untyped-call]
    parsed = bag.dags.get(dag_id)
    if parsed is None or not hasattr(parsed, "get_template_env"):
        raise AirflowException(
            f"Cannot render a callback of DAG {dag_id!r} with its Jinja environment: parsing {fileloc} "
            f"again did not give the DAG ({len(bag.import_errors)} import error(s))."
        )
    return parsed


def in_process_supervisor() -> bool:
    """
    Whether Airflow runs this task or trigger in-process, under ``dag.test()`` or ``airflow dags test``.

    There the task SDK's channel to its supervisor (``task_runner.SUPERVISOR_COMMS``) is an
    ``InProcessSupervisorComms`` (``airflow.sdk.execution_time.supervisor``, Airflow 3.1 to 3.3):
    it has a blocking ``send`` but no ``asend``, so the SDK's async calls (``XCom.aget_one``)
    fail on it, and a deferred task's trigger runs in line right after the deferral, with no
    scheduler and no triggerer.  In a worker or the triggerer the channel has ``asend``.

    Raises :class:`AirflowException` for a channel that is neither: an Airflow whose internals
    changed, where neither the async nor the blocking path is known to work.
    """
    import sys

    from airflow.sdk.execution_time import task_runner

    comms = getattr(task_runner, "SUPERVISOR_COMMS", None)
    if comms is None:  # outside a task or trigger (a script, a unit test): nothing to ask
        return False
    # Not imported here: a channel of that class means its module is loaded already.
    supervisor = sys.modules.get("airflow.sdk.execution_time.supervisor")
    in_process = getattr(supervisor, "InProcessSupervisorComms", None)
    if isinstance(in_process, type) and isinstance(comms, in_process):
        return True
    if callable(getattr(comms, "asend", None)):
        return False
    from importlib.metadata import version

    raise AirflowException(
        f"This Airflow ({version('apache-airflow-core')}) talks to its supervisor through "
        f"{type(comms).__name__}, which has no asend() and is not dag.test()'s InProcessSupervisorComms; "
        "vantax-provider does not know how to read XComs there. Use a supported Airflow version "
        "(see docs/compatibility.md)."
    )


def metastore_connection(conn_id: str) -> Any:
    """
    The connection ``conn_id`` from the metadata DB, where the task SDK cannot ask for it; else None.

    ``airflow dags test`` runs a DAG's own callbacks (``on_success_callback`` of the DAG) in its
    command's process after the run, with no supervisor channel (``task_runner.SUPERVISOR_COMMS``)
    and no process context: the SDK's lookup there asks environment variables and configured
    secrets backends only, so a connection added with ``airflow connections add`` "isn't
    defined" (Airflow 3.1 to 3.3).  That process has the metadata DB, as the command itself
    does.  Anywhere else (a task, a trigger, a callback under the dag-processor, a server) the
    SDK's answer stands, and so does a DB that cannot be read.
    """
    import os

    from airflow.sdk.execution_time import task_runner

    if getattr(task_runner, "SUPERVISOR_COMMS", None) is not None:
        return None  # a task, trigger or callback runner: the supervisor answered
    if os.environ.get("_AIRFLOW_PROCESS_CONTEXT"):
        return None  # a server or triggerer process: the SDK's own chain applies
    try:
        from airflow.secrets.metastore import MetastoreBackend

        return MetastoreBackend().get_connection(conn_id)
    except Exception:  # no DB here (a script, a worker without one): the SDK's "isn't defined" stands
        return None


async def aget_xcom(*, key: str, dag_id: str, task_id: str, run_id: str, map_index: int) -> Any:
    """
    One XCom value of a task instance, read from a trigger (the triggerer answers ``GetXCom``).

    Airflow 3.3 has ``XCom.aget_one``; 3.1 and 3.2 only the blocking ``XCom.get_one``, run in a thread.
    Under ``dag.test()`` (see :func:`in_process_supervisor`) the blocking read is used on every
    version: the in-process channel has no async send.  ``XCom`` is the configured backend, so a
    custom backend (object storage) is honoured.
    """
    from airflow.sdk.execution_time.xcom import XCom

    aget_one = getattr(XCom, "aget_one", None)
    if aget_one is not None and not in_process_supervisor():
        return await aget_one(key=key, dag_id=dag_id, task_id=task_id, run_id=run_id, map_index=map_index)
    from asgiref.sync import sync_to_async

    get_one = sync_to_async(XCom.get_one)
    return await get_one(key=key, dag_id=dag_id, task_id=task_id, run_id=run_id, map_index=map_index)


def async_connection_lookup() -> Callable[..., Awaitable[Any]] | None:
    """
    ``get_async_connection(conn_id, hook=...)`` of apache-airflow-providers-common-compat, or None.

    ``hook=`` came in common-compat 1.17.0: 1.8.0 to 1.16.0 have the function without it, and
    without it it ignores the hook (and, before Airflow 3.3.2, masks secrets with a blocking call
    on the event loop); older versions have no such function.  None tells the caller to use the
    synchronous lookup in a worker thread instead.  The signature is read once per function.
    """
    try:
        from airflow.providers.common.compat.connection import get_async_connection
    except ImportError:  # common-compat < 1.8.0
        return None
    return get_async_connection if _takes_hook(get_async_connection) else None


@functools.lru_cache(maxsize=4)
def _takes_hook(function: Callable[..., Any]) -> bool:
    import inspect

    try:
        return "hook" in inspect.signature(function).parameters
    except (TypeError, ValueError):  # no readable signature: do not guess
        return False


def object_storage_path(uri: str, conn_id: str | None = None) -> Any:
    """
    Airflow's ``ObjectStoragePath`` for ``uri`` (``file://``, ``s3://``... through fsspec).

    ``airflow.sdk.ObjectStoragePath`` in 3.1 and 3.3; ``conn_id`` names the Airflow connection of
    the object store (None: the store's default credentials, or none for local files).
    """
    try:
        from airflow.sdk import ObjectStoragePath
    except ImportError as exc:  # pragma: no cover - every supported Airflow has it
        raise AirflowException(
            "This Airflow has no airflow.sdk.ObjectStoragePath; the bulk report needs it "
            "(set report_path=None to send without a report)."
        ) from exc
    return ObjectStoragePath(uri, conn_id=conn_id)


def airflow_home() -> str:
    """The ``AIRFLOW_HOME`` folder of this process (``~/airflow`` when unset), as Airflow resolves it."""
    try:
        from airflow.configuration import get_airflow_home
    except ImportError:  # pragma: no cover - the same in 3.1 and 3.3
        import os

        return os.path.expanduser(os.environ.get("AIRFLOW_HOME") or "~/airflow")
    return str(get_airflow_home())
