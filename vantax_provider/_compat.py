"""Names that moved between Airflow 3.1 and 3.3, imported from wherever this Airflow has them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk.exceptions import (
        AirflowException,
        AirflowFailException,
        AirflowSensorTimeout,
        AirflowSkipException,
    )
else:
    try:
        from airflow.sdk.exceptions import (
            AirflowException,
            AirflowFailException,
            AirflowSensorTimeout,
            AirflowSkipException,
        )
    except ImportError:  # Airflow < 3.2 keeps them in core
        from airflow.exceptions import (
            AirflowException,
            AirflowFailException,
            AirflowSensorTimeout,
            AirflowSkipException,
        )

__all__ = [
    "AirflowException",
    "AirflowFailException",
    "AirflowSensorTimeout",
    "AirflowSkipException",
    "aget_xcom",
    "airflow_home",
    "conf_seconds",
    "default_deferrable",
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


async def aget_xcom(*, key: str, dag_id: str, task_id: str, run_id: str, map_index: int) -> Any:
    """
    One XCom value of a task instance, read from a trigger (the triggerer answers ``GetXCom``).

    Airflow 3.3 has ``XCom.aget_one``; 3.1 and 3.2 only the blocking ``XCom.get_one``, run in a thread.
    ``XCom`` is the configured backend, so a custom backend (object storage) is honoured.
    """
    from airflow.sdk.execution_time.xcom import XCom

    aget_one = getattr(XCom, "aget_one", None)
    if aget_one is not None:
        return await aget_one(key=key, dag_id=dag_id, task_id=task_id, run_id=run_id, map_index=map_index)
    from asgiref.sync import sync_to_async

    get_one = sync_to_async(XCom.get_one)
    return await get_one(key=key, dag_id=dag_id, task_id=task_id, run_id=run_id, map_index=map_index)


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
