# pipetrail — two commands set everything up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q -q
export PIPETRAIL_HOME ?= $(CURDIR)/.pipetrail

.PHONY: demo test lint bench bench-scale bench-quick bench-peers soak clean help browser

help:
	@echo "make demo   - set up .venv, run the example ML pipeline, print where to look"
	@echo "make test   - install test tools, run linters and the whole test suite (SQLite + PostgreSQL)"
	@echo "make bench  - run the benchmark suite, print a table, write bench-results/latest.json"
	@echo "make bench-peers - pipetrail beside Kedro and MLflow (pinned venvs in .bench-venvs/), write bench-results/peers.json; PEERS_QUICK=1 for small workloads"
	@echo "make soak   - bounded fault injection (kills, pauses, crowds) on SQLite and PostgreSQL"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the project's declared dependencies change.
# The dashboard's browser libraries come from the npm registry, pinned by web/package-lock.json.
VENDOR := src/pipetrail/dashboard/static/vendor/manifest.json
$(VENDOR): web/package.json web/package-lock.json web/build.mjs
	npm ci --prefix web --no-audit --no-fund --loglevel=error
	npm run build --prefix web --silent

$(VENV)/.installed-demo: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[examples,postgres,cluster,s3,audit]'
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[examples,postgres,cluster,s3,audit,dev]'
	@touch $@ $(VENV)/.installed-demo

demo: $(VENV)/.installed-demo $(VENDOR)
	@$(BIN)/pipetrail run examples/iris.py --tag demo; status=$$?; \
	echo; \
	echo "The run is recorded in $(PIPETRAIL_HOME)."; \
	echo "The commands above are in $(BIN)/ (or: source $(BIN)/activate). Also try:"; \
	echo "  $(BIN)/pipetrail runs list"; \
	echo "  $(BIN)/pipetrail run examples/iris.py -p lr=0.05 -p epochs=60   # another run"; \
	echo "  $(BIN)/pipetrail run examples/iris.py -p dataset=nope           # a failing run"; \
	echo; \
	echo "The dashboard:  $(BIN)/pipetrail ui"; \
	$(BIN)/python -c "import pipetrail as pt; r = pt.Pipeline('iris').latest_run; print('then open:      http://127.0.0.1:8765/pipelines/iris/runs/%s' % r.id)"; \
	exit $$status

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests examples benchmarks
	$(BIN)/ruff format --check src tests examples benchmarks
	$(BIN)/mypy --strict src tests
	$(BIN)/lint-imports

# Browser tests drive Debian's Chromium; install it when missing (CI runs as root).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

test: $(VENV)/.installed-dev $(VENDOR) lint browser
	$(BIN)/python -m pytest -n 2 -q

bench: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/run.py

# The million-run PostgreSQL scenario too (seeding takes minutes; PIPETRAIL_BENCH_PG picks the server).
bench-scale: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/run.py --scale

bench-quick: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/run.py --quick

# The same scenarios on pipetrail, Kedro and MLflow side by side (PEERS_QUICK=1: small workloads).
# The peers' pinned virtualenvs are created under .bench-venvs/ when missing (benchmarks/peers/venvs.py).
bench-peers: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/peers/run.py

# Kills, pauses and crowds real runners, then counts what was lost (minutes; not part of make test).
soak: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/soak.py $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .pipetrail bench-results test-output .pytest_cache .mypy_cache .ruff_cache web/node_modules
