# The two commands: `make run` (the platform) and `make test` (the suite).
# Both create .venv and install the project on first use.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip

.PHONY: install install-dev install-engine run test bench bench-runs bench-retrieval bench-sandbox bench-context bench-store bench-store-chat bench-limits bench-load bench-restart sandbox-image deploy-images lint typecheck format clean-data help

help:
	@echo "make run    - run the platform (API, worker, embedded PostgreSQL, Redis, model engine)"
	@echo "make test   - run the whole test suite against the same embedded stack"
	@echo "make bench  - run the benchmarks (bench/), printing figures"
	@echo "make bench-runs - only the runs benchmark (bench/runs_bench.py)"
	@echo "make bench-load - 200 streaming runs + CRUD on 2 web + 2 workers, 10 min (bench/load_bench.py)"
	@echo "make bench-retrieval - retrieval quality, HNSW latency/recall, ingestion (bench/retrieval_bench.py)"
	@echo "make sandbox-image - build the code interpreter's Docker image (needs root + Docker)"
	@echo "make deploy-images - the sandbox image, then the web/worker image agents:<hash> (deploy/)"
	@echo "make bench-sandbox - only the code interpreter benchmark (bench/sandbox_bench.py)"
	@echo "make bench-context - prompt-prefix stability and context assembly cost (bench/context_bench.py)"
	@echo "make bench-store - store home/search p50/p95 with 10,000 listings (bench/store_bench.py)"
	@echo "make bench-store-chat - first streamed token: store browser chat vs the API (bench/store_chat_bench.py)"
	@echo "make bench-limits - rate limiter cost and refusal latencies (bench/limits_bench.py)"
	@echo "make bench-restart - PostgreSQL/Redis restarts and killed workers under load (bench/restart_bench.py)"
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

# 10 minutes by default; BENCH_LOAD_ARGS="--duration 60" to try it quickly.
bench-load: install-dev
	AGENTS_ENGINE=off $(PY) -m core.stack exec -- $(PY) bench/load_bench.py $(BENCH_LOAD_ARGS)

# Ingests a test collection (default ../shared/data/cranfield) through the
# platform and searches it through the API; no chat model is needed.
bench-retrieval: install-dev
	AGENTS_ENGINE=off $(PY) -m core.stack exec -- $(PY) bench/retrieval_bench.py $(BENCH_RETRIEVAL_ARGS)

# Infinite threads: no model is called (the summarizer is a stub there).
bench-context: install-dev
	AGENTS_ENGINE=off $(PY) -m core.stack exec -- $(PY) bench/context_bench.py $(BENCH_CONTEXT_ARGS)

# Store pages: no model is called.
bench-store: install-dev
	AGENTS_ENGINE=off $(PY) -m core.stack exec -- $(PY) bench/store_bench.py $(BENCH_STORE_ARGS)

# Store chat in chromium (apt) against the API, with the scripted engine.
bench-store-chat: install-dev
	AGENTS_ENGINE=off $(PY) -m core.stack exec -- $(PY) bench/store_chat_bench.py $(BENCH_STORE_CHAT_ARGS)

# Quotas and limits: limiter cost, refusal latencies. No model is called.
bench-limits: install-dev
	AGENTS_ENGINE=off $(PY) -m core.stack exec -- $(PY) bench/limits_bench.py $(BENCH_LIMITS_ARGS)

# Restart drill: starts its own PostgreSQL, Redis, scripted engine, web and
# workers (it restarts them, so not the launcher's). ~4 minutes by default.
bench-restart: install-dev
	$(PY) bench/restart_bench.py $(BENCH_RESTART_ARGS)

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install-dev
	$(VENV)/bin/mypy config core assistants tools sandbox store

format: install-dev
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# The code interpreter's image, built offline with debootstrap + docker import
# (sandbox/image/build.py): 4-7 minutes the first time, then skipped while
# an image of the same inputs exists. `make test` does not build it (CI does,
# in .ci/run); without it the Docker tests skip, or fail in CI.
sandbox-image: install
	$(PY) -m sandbox.image.build

# The web/worker image for deploy/ (compose, Helm): dependencies resolved on
# the host into a wheelhouse, then installed with --no-index in the build, so
# no registry is needed; BASE is python:3.11-slim-bookworm when present, else
# the sandbox's local Debian base (AGENTS_IMAGE_BASE to choose). Tagged
# agents:<hash of its inputs> and agents:latest; skipped when it exists.
deploy-images: sandbox-image
	$(PY) deploy/build.py

# Talks to Docker only (no database, no engine).
bench-sandbox: install-dev
	$(PY) bench/sandbox_bench.py $(BENCH_SANDBOX_ARGS)
