# The two commands: `make run` (the platform) and `make test` (the suite).
# Both create .venv and install the project on first use.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip

.PHONY: install install-dev install-engine run test bench bench-runs lint typecheck format clean-data help

help:
	@echo "make run    - run the platform (API, worker, embedded PostgreSQL, Redis, model engine)"
	@echo "make test   - run the whole test suite against the same embedded stack"
	@echo "make bench  - run the benchmarks (bench/), printing figures"
	@echo "make bench-runs - only the runs benchmark (bench/runs_bench.py)"
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

# The local model engine (the `engine` extra): llama-cpp-python compiles from
# source the first time (~15 min on 2 cores; pip caches the wheel), so the
# helper prints progress and a heartbeat. It skips itself when MODEL_BASE_URL
# is set or AGENTS_ENGINE=off, and a failed build is a warning (the platform
# serves without it) unless AGENTS_REQUIRE_REAL_SERVICES=1. It writes the
# stamp itself, only once the engine is installed.
$(VENV)/.installed-engine: pyproject.toml $(VENV)/.installed
	@$(PY) -m core.stack.engine install $(VENV)

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev
install-engine: $(VENV)/.installed-engine

run: install install-engine
	$(PY) -m core.stack run

test: install-dev install-engine
	$(PY) -m core.stack test $(PYTEST_ARGS)

bench: install-dev
	$(PY) -m core.stack exec -- $(PY) bench/api_bench.py $(BENCH_ARGS)
	@$(MAKE) --no-print-directory bench-runs

# Runs against the scripted engine (tests/fake_engine.py), which answers at
# once: the local llama.cpp engine is not needed, so it is not started.
bench-runs: install-dev
	AGENTS_ENGINE=off $(PY) -m core.stack exec -- $(PY) bench/runs_bench.py $(BENCH_RUNS_ARGS)

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install-dev
	$(VENV)/bin/mypy config core assistants tools sandbox

format: install-dev
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .
