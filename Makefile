# The two set-up commands in the README are `make demo` and `make test`; each builds .venv
# with the pinned versions when it is missing or older than the files that define it.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.9
CONSTRAINTS := requirements/constraints.txt
STAMP := $(VENV)/.installed
# The oldest supported Airflow gets its own environment; the unit suite runs on both.
VENV31 := .venv-airflow-3.1
PY31 := $(VENV31)/bin/python
CONSTRAINTS31 := requirements/constraints-airflow-3.1.txt
STAMP31 := $(VENV31)/.installed
# What the style gates look at (only the folders that exist).
LINT_PATHS = $(wildcard vantax_provider tests example_dags bench demo tools)
# The Airflow 3.1 run: no slow and no end-to-end tests.
UNIT_MARKERS := not slow and not e2e
# Keep tests and tools off any Airflow home the user may have.
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export NO_MKDOCS_2_WARNING := 1

.PHONY: venv venv-airflow-3.1 demo test test-unit test-airflow-3.1 test-all test-slow bench \
	lint format-check typecheck imports docs docs-serve dist clean lock

venv: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m uv --version >/dev/null 2>&1 || $(PY) -m pip install -q "uv==$(UV_VERSION)"
	$(PY) -m uv pip install -q -p $(PY) -c $(CONSTRAINTS) -e ".[dev]"
	@touch $@

venv-airflow-3.1: $(STAMP31)

$(STAMP31): pyproject.toml $(CONSTRAINTS31)
	@test -x $(PY31) || $(PYTHON) -m venv $(VENV31)
	@$(PY31) -m uv --version >/dev/null 2>&1 || $(PY31) -m pip install -q "uv==$(UV_VERSION)"
	$(PY31) -m uv pip install -q -p $(PY31) -c $(CONSTRAINTS31) -e ".[dev]"
	@touch $@

demo: $(STAMP)
	$(PY) -m demo

# Gates first (cheap), then the two suites side by side, one on each of two cores (each is mostly
# one busy process). Each suite's output is printed whole when it ends (--output-sync), so the
# last lines are a pytest summary; the build of both environments comes first, one at a time.
test: lint format-check typecheck imports docs $(STAMP31)
	@$(MAKE) --no-print-directory -j2 --output-sync=target test-airflow-3.1 test-unit

# Every test not marked slow, on the pinned Airflow: unit tests, the docs examples, the fault matrix,
# and the end-to-end scheduler/triggerer test (marked e2e, not slow).
test-unit: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# Tests marked airflow_3_3 use features that 3.1 lacks (task_state_store): tests/conftest.py skips
# them there. The reliability suites run on the pinned Airflow only.
test-airflow-3.1: $(STAMP31)
	$(PY31) -m pytest -q -m "$(UNIT_MARKERS) and not airflow_3_3 and not single_env" \
		--ignore=tests/reliability

test-all: $(STAMP)
	$(PY) -m pytest -q

# What .ci/run runs after `make test`, whatever its result: the tests marked slow (the connection
# form in a browser, installing the wheel, the soak, the crash tests).
test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow || [ $$? -eq 5 ]

# `make bench` prints every figure; `make bench SCENARIO=dagrun` (or rate, import-cost, render-cost, emulator, or
# "celery 100000 20") runs one scenario.
bench: $(STAMP)
	$(PY) -m bench $(SCENARIO)

lint: $(STAMP)
	$(PY) -m ruff check $(LINT_PATHS)

format-check: $(STAMP)
	$(PY) -m ruff format --check $(LINT_PATHS)

typecheck: $(STAMP)
	$(PY) -m mypy

# The layer contracts in pyproject.toml ([tool.importlinter]); tests/quality/test_layers.py shows
# that each contract fails on the import it forbids.
imports: $(STAMP)
	$(VENV)/bin/lint-imports --no-cache --no-logo

docs: $(STAMP)
	$(PY) -m mkdocs build --strict --quiet --site-dir site

docs-serve: $(STAMP)
	$(PY) -m mkdocs serve -a 127.0.0.1:8000

dist: $(STAMP)
	rm -rf dist
	$(PY) -m uv build -q --out-dir dist
	$(PY) -m twine check --strict dist/*

# Re-pin after editing pyproject.toml's dependencies.  The 3.1 environment is resolved as of
# shortly after Airflow 3.1.0's release, so that its dependencies are ones it was tested with.
lock: $(STAMP)
	$(PY) -m uv pip compile -q pyproject.toml --extra dev -p 3.11 -o $(CONSTRAINTS)
	$(PY) -m uv pip compile -q pyproject.toml --extra dev -p 3.11 -c requirements/airflow-3.1.in \
		--exclude-newer 2025-11-01 -o $(CONSTRAINTS31)

clean:
	rm -rf $(VENV) .venv-* dist build site .mypy_cache .ruff_cache
