"""
Running test DAGs with ``dag.test()``.

Airflow 3.3's ``dag.test()`` only runs a DAG whose file is inside the DAGs folder (it serialises
it from there), so test DAGs are written as files into that folder and imported from it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import textwrap
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def dags_folder() -> Path:
    folder = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def load_module(path: Path) -> Any:
    name = "vx_dag_" + re.sub(r"\W", "_", str(path.relative_to(dags_folder())))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_dag(name: str, source: str, files: dict[str, str] | None = None) -> Any:
    """Write ``source`` (which must bind ``dag``) as ``<name>.py`` in the DAGs folder and return the DAG."""
    folder = dags_folder()
    for relative, text in (files or {}).items():
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return load_module(path).dag


def copy_examples() -> Path:
    """The repository's example DAGs (with their data), copied into the DAGs folder."""
    target = dags_folder() / "vantax_examples"
    if not target.exists():
        shutil.copytree(REPO / "example_dags", target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def task_states(dag_run: Any) -> dict[str, tuple[str | None, int]]:
    """``{"task_id" or "task_id[i]": (state, try_number)}`` of a finished run."""
    out = {}
    for ti in dag_run.get_task_instances():
        key = ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
        out[key] = (None if ti.state is None else str(ti.state), ti.try_number)
    return out


def xcom(dag_run: Any, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.scalars(
            XComModel.get_many(
                run_id=dag_run.run_id,
                dag_ids=dag_run.dag_id,
                task_ids=task_id,
                key=key,
                map_indexes=map_index,
            )
        ).all()
        return None if not rows else XComModel.deserialize_value(rows[0])


def rendered_fields(dag_id: str) -> list[tuple[str, int, Any]]:
    """``(task_id, map_index, rendered_fields)`` of every task instance of ``dag_id`` (what the UI shows)."""
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(RenderedTaskInstanceFields).where(RenderedTaskInstanceFields.dag_id == dag_id)
        ).all()
        return [(row.task_id, row.map_index, row.rendered_fields) for row in rows]
