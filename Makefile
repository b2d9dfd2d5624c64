# The two set-up commands in the README are `make demo` and `make test`; each builds .venv
# with the pinned versions when it is missing or older than the files that define it.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.9
CONSTRAINTS := requirements/constraints.txt
STAMP := $(VENV)/.installed
# The other tested Airflow versions, each in .venv-NAME, pinned by requirements/constraints-NAME.txt
# (docs/compatibility.md has the table):
#   airflow-3.1         3.1.1, the tested floor: the unit suite and the smoke (make test)
#   airflow-3.1-latest  the latest 3.1 release: the smoke (make test-matrix)
#   airflow-3.2         the latest 3.2 release: the smoke (make test-matrix)
#   floors              3.1.1 with every library the provider imports at its declared floor: the
#                       smoke (make test-matrix)
# Each is built on first use (about 20 s with a warm download cache).
VENV31 := .venv-airflow-3.1
PY31 := $(VENV31)/bin/python
STAMP31 := $(VENV31)/.installed
# The environments of `make test-matrix` (the floor's smoke runs in `make test`).
MATRIX_ENVS := airflow-3.1-latest airflow-3.2 floors
# The DAG-run smoke (tests/e2e/test_matrix_smoke.py): send, defer and resume through a real
# triggerer, a deferred sensor and a bulk wait.
SMOKE := tests/e2e/test_matrix_smoke.py
# What the style gates look at (only the folders that exist).
LINT_PATHS = $(wildcard vantax_provider tests example_dags bench demo tools)
# The Airflow 3.1 run: no slow and no end-to-end tests but the smoke.
UNIT_MARKERS := not slow and not e2e
# Keep tests and tools off any Airflow home the user may have.
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export NO_MKDOCS_2_WARNING := 1

.PHONY: venv venv-airflow-3.1 venv-airflow-3.1-latest venv-airflow-3.2 venv-floors demo test test-unit \
	test-airflow-3.1 test-matrix test-all test-slow bench lint format-check typecheck imports docs \
	docs-serve dist clean lock

venv: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m uv --version >/dev/null 2>&1 || $(PY) -m pip install -q "uv==$(UV_VERSION)"
	$(PY) -m uv pip install -q -p $(PY) -c $(CONSTRAINTS) -e ".[dev]"
	@touch $@

venv-airflow-3.1: .venv-airflow-3.1/.installed
venv-airflow-3.1-latest: .venv-airflow-3.1-latest/.installed
venv-airflow-3.2: .venv-airflow-3.2/.installed
venv-floors: .venv-floors/.installed

# One rule for every Airflow version's environment: the dev tools and the provider (editable) under
# that version's constraints.
.venv-%/.installed: pyproject.toml requirements/constraints-%.txt
	@test -x $(@D)/bin/python || $(PYTHON) -m venv $(@D)
	@$(@D)/bin/python -m uv --version >/dev/null 2>&1 || $(@D)/bin/python -m pip install -q "uv==$(UV_VERSION)"
	$(@D)/bin/python -m uv pip install -q -p $(@D)/bin/python -c requirements/constraints-$*.txt -e ".[dev]"
	@touch $@

# The floors environment holds only what the smoke needs (the dev tools' floors are not what is
# tested): exactly the pinned set, then the provider without dependencies.
.venv-floors/.installed: pyproject.toml requirements/constraints-floors.txt
	@test -x $(@D)/bin/python || $(PYTHON) -m venv $(@D)
	@$(@D)/bin/python -m uv --version >/dev/null 2>&1 || $(@D)/bin/python -m pip install -q "uv==$(UV_VERSION)"
	$(@D)/bin/python -m uv pip install -q -p $(@D)/bin/python -r requirements/constraints-floors.txt
	$(@D)/bin/python -m uv pip install -q -p $(@D)/bin/python --no-deps -e .
	@touch $@

demo: $(STAMP)
	$(PY) -m demo

# Gates first (cheap), then the two suites side by side, one on each of two cores (each is mostly
# one busy process): the latest Airflow (3.3) and the floor (3.1.1), each with the smoke. Each
# suite's output is printed whole when it ends (--output-sync), so the last lines are a pytest
# summary; the build of both environments comes first, one at a time.  The other versions' smokes
# are test-matrix, which .ci/run runs after this.
test: lint format-check typecheck imports docs $(STAMP31)
	@$(MAKE) --no-print-directory -j2 --output-sync=target test-airflow-3.1 test-unit

# Every test not marked slow, on the pinned Airflow: unit tests, the docs examples, the fault matrix,
# and the tests marked e2e but not slow, among them the smoke (tests/e2e/test_matrix_smoke.py).
test-unit: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# Tests marked airflow_3_3 use features that 3.1 lacks (task_state_store): tests/conftest.py skips
# them there. The reliability suites run on the pinned Airflow only; of the e2e tests, the smoke.
test-airflow-3.1: $(STAMP31)
	$(PY31) -m pytest -q -m "($(UNIT_MARKERS) and not airflow_3_3 and not single_env) or matrix" \
		--ignore=tests/reliability

# The smoke on the other versions (MATRIX_ENVS), one environment after the other (a deployment keeps
# both cores busy while it starts); -k runs them all even when one fails.  `make smoke-airflow-3.2`
# (or smoke-NAME for any .venv-NAME, airflow-3.1 too) builds one environment and runs its smoke.
test-matrix:
	@$(MAKE) --no-print-directory -k $(addprefix smoke-,$(MATRIX_ENVS))

smoke-%: .venv-%/.installed
	VANTAX_EXPECT_FLOORS=$(if $(filter floors,$*),1,0) .venv-$*/bin/python -m pytest -q -m matrix $(SMOKE)

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

# Re-pin after editing pyproject.toml's dependencies (uv keeps every pin it can from the existing
# file).  Each other Airflow version is resolved as of its release week, so that its libraries are
# the ones it was released with, as Airflow's own constraints file for it gives them:
#   3.1.1 released 2025-10-27, 3.1.8 2026-03-11, 3.2.2 2026-05-29.
# The floors: Airflow 3.1.1's pins with every dependency of pyproject.toml at its lowest allowed
# version (lowest-direct).  Its file starts as the 3.1 one less those dependencies' lines (FLOOR_DEPS),
# so that uv keeps the rest of 3.1.1's pins: later releases of its libraries (structlog 25.5,
# published the day 3.1.1 was) break it.  A floor raised to a release made after 2025-11-01 needs
# --exclude-newer-package NAME=DATE on that line; a dependency missing from FLOOR_DEPS keeps 3.1.1's
# pin, which the floors smoke reports (tests/e2e/test_matrix_smoke.py).
FLOOR_DEPS := apache-airflow|apache-airflow-providers-common-compat|asgiref|httpx|pydantic|jinja2|uvicorn
LOCK := $(PY) -m uv pip compile -q -p 3.11
lock: $(STAMP)
	$(LOCK) pyproject.toml --extra dev -o $(CONSTRAINTS)
	$(LOCK) pyproject.toml --extra dev -c requirements/airflow-3.1.in --exclude-newer 2025-11-01 \
		-o requirements/constraints-airflow-3.1.txt
	$(LOCK) pyproject.toml --extra dev -c requirements/airflow-3.1-latest.in --exclude-newer 2026-03-16 \
		-o requirements/constraints-airflow-3.1-latest.txt
	$(LOCK) pyproject.toml --extra dev -c requirements/airflow-3.2.in --exclude-newer 2026-06-03 \
		-o requirements/constraints-airflow-3.2.txt
	grep -v -E '^($(FLOOR_DEPS))==' requirements/constraints-airflow-3.1.txt > requirements/constraints-floors.txt
	$(LOCK) pyproject.toml requirements/floors.in --extra emulator --resolution lowest-direct \
		--exclude-newer 2025-11-01 -o requirements/constraints-floors.txt

clean:
	rm -rf $(VENV) .venv-* dist build site .mypy_cache .ruff_cache
