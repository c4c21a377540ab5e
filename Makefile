# The two commands: `make run` (the platform) and `make test` (the suite).
# Both create .venv and install the project on first use.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip

.PHONY: install install-dev run test bench lint typecheck format clean-data help

help:
	@echo "make run    - run the platform (API, worker, embedded PostgreSQL and Redis)"
	@echo "make test   - run the whole test suite against the same embedded stack"
	@echo "make bench  - run the benchmarks (bench/), printing figures"
	@echo "make lint   - ruff; make typecheck - mypy"

$(PY):
	@echo "[agents] creating $(VENV)"
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(PY)
	@echo "[agents] installing the project into $(VENV) (first run takes a few minutes)"
	$(PIP) install --progress-bar off -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	@echo "[agents] installing test and development tools"
	$(PIP) install --progress-bar off -e '.[dev]'
	@touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: install
	$(PY) -m core.stack run

test: install-dev
	$(PY) -m core.stack test $(PYTEST_ARGS)

bench: install-dev
	$(PY) -m core.stack exec -- $(PY) bench/api_bench.py $(BENCH_ARGS)

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install-dev
	$(VENV)/bin/mypy config core assistants tools sandbox

format: install-dev
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .
