# Every target bootstraps .venv on first use, so a fresh machine needs only
# Python 3.11+ and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint schema schema-check bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/datadiver-graph serve --host $(HOST) --port $(PORT)

# The client-conformance suite's libraries, pinned by tests/clients/package-lock.json.
CLIENTS := tests/clients
$(CLIENTS)/node_modules/.package-lock.json: $(CLIENTS)/package-lock.json
	cd $(CLIENTS) && npm ci --no-audit --no-fund --loglevel=error

test: $(STAMP) $(CLIENTS)/node_modules/.package-lock.json
	$(BIN)/datadiver-graph schema --check
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

schema: $(STAMP)
	$(BIN)/datadiver-graph schema > schema.graphql

# The bench extra (py-spy) only for benchmarks; `make bench BENCH_ARGS=--quick` for a short run.
$(VENV)/.installed-bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@touch $@

bench: $(VENV)/.installed-bench
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache $(CLIENTS)/node_modules
