# The two set-up commands in the README are `make demo` and `make test`; each builds .venv
# with the pinned versions when it is missing or older than the files that define it.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.9
CONSTRAINTS := requirements/constraints.txt
STAMP := $(VENV)/.installed
# Keep tests and tools off any Airflow home the user may have.
export AIRFLOW__CORE__LOAD_EXAMPLES := False

.PHONY: venv demo test test-all bench lint clean lock

venv: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m uv --version >/dev/null 2>&1 || $(PY) -m pip install -q "uv==$(UV_VERSION)"
	$(PY) -m uv pip install -q -p $(PY) -c $(CONSTRAINTS) -e ".[dev]"
	@touch $@

demo: $(STAMP)
	$(PY) -m vantax_provider.demo

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

test-all: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m bench

lint: $(STAMP)
	$(PY) -m ruff check vantax_provider tests example_dags bench
	$(PY) -m ruff format --check vantax_provider tests example_dags bench
	$(PY) -m mypy

# Re-pin after editing pyproject.toml's dependencies.
lock: $(STAMP)
	$(PY) -m uv pip compile -q pyproject.toml --extra dev -p 3.11 -o $(CONSTRAINTS)

clean:
	rm -rf $(VENV) .venv-* dist build site .mypy_cache .ruff_cache
