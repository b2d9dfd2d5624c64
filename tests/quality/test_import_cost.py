"""
What a DAG file pays for importing the provider: no heavy library that Airflow's base classes do
not already import.  (The time itself is a benchmark, ``make bench``, not a timed assertion here.)
"""

from __future__ import annotations

import pytest

from bench._import_cost import DAG_FACING_MODULES, probe

HEAVY = {"httpx", "httpcore", "pydantic", "jinja2", "sqlalchemy", "starlette", "uvicorn", "anyio"}


@pytest.mark.single_env
def test_dag_facing_modules_pull_in_no_heavy_library_the_base_classes_do_not() -> None:
    added = {name.split(".")[0] for name in probe(*DAG_FACING_MODULES)["added"]}
    assert "vantax_provider" in added, "the probe imported none of our modules: it measures nothing"
    heavy = added & HEAVY
    assert not heavy, f"these libraries are imported only because of the provider: {sorted(heavy)}"
