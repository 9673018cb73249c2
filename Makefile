# Every target bootstraps .venv on first use, so a fresh machine needs only
# Python 3.11+ and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# The exact versions every install uses (`make lock` regenerates them from pyproject.toml):
# dev.lock for development, tests and CI (dev and bench extras); runtime.lock for the image,
# resolved within dev.lock so production runs the versions the tests ran.
DEV_LOCK     := requirements/dev.lock
RUNTIME_LOCK := requirements/runtime.lock

HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test test-stock lint schema schema-check bench clean lock upgrade-check test-pythons check-pythons

# The locked versions (hash-checked), then the package itself without resolving anything again.
# $(1): the venv directory.
define install_locked
	$(1)/bin/python -m pip install --quiet --require-hashes -r $(DEV_LOCK)
	$(1)/bin/python -m pip install --quiet --no-deps -e .
	@touch $(1)/.installed
endef

$(STAMP): pyproject.toml $(DEV_LOCK)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(call install_locked,$(VENV))

run: $(STAMP)
	$(BIN)/datadiver-graph serve --host $(HOST) --port $(PORT)

# The client-conformance suite's libraries, pinned by tests/clients/package-lock.json.
CLIENTS := tests/clients
$(CLIENTS)/node_modules/.package-lock.json: $(CLIENTS)/package-lock.json
	cd $(CLIENTS) && npm ci --no-audit --no-fund --loglevel=error

test: $(STAMP) $(CLIENTS)/node_modules/.package-lock.json
	$(BIN)/datadiver-graph schema --check
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-stock

# The API, subscription and client-conformance tests again with FAST_PATHS=false: stock
# Strawberry and uvicorn must give the same answers as the fast paths.
STOCK_TESTS := tests/test_graphql_api.py tests/test_subscriptions.py tests/test_clients_node.py \
	tests/test_clients_gql.py tests/test_persisted_documents.py tests/test_limits.py \
	tests/test_ws_text_frames.py tests/test_request_errors.py tests/test_billing_api.py \
	tests/test_graphiql.py tests/test_fastpaths_switch.py tests/test_hardening2.py \
	tests/test_clients_gql_context.py tests/test_billing_features.py
test-stock: $(STAMP) $(CLIENTS)/node_modules/.package-lock.json
	FAST_PATHS=false $(BIN)/python -m pytest $(STOCK_TESTS) $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

schema: $(STAMP)
	$(BIN)/datadiver-graph schema > schema.graphql

# The bench extra (py-spy) is in the dev lock; `make bench BENCH_ARGS=--quick` for a short run.
bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

# Regenerate the locks after changing a range in pyproject.toml. uv keeps every pin the ranges
# still allow; to move pins forward: `make lock LOCK_ARGS=--upgrade` (or
# `LOCK_ARGS='--upgrade-package starlette'`). --universal: one lock for every Python and platform.
LOCK_FLAGS = --universal --python-version 3.11 --generate-hashes --quiet \
	--custom-compile-command 'make lock' $(LOCK_ARGS)
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml $(LOCK_FLAGS) --extra dev --extra bench -o $(DEV_LOCK)
	$(BIN)/uv pip compile pyproject.toml $(LOCK_FLAGS) -c $(DEV_LOCK) -o $(RUNTIME_LOCK)

# What would the newest versions the ranges allow break? A separate venv, no lock: it lists the
# versions that differ from the lock, then runs the tests (PYTEST_ARGS applies) on them.
UPGRADE_VENV := .venv-upgrade
upgrade-check: $(CLIENTS)/node_modules/.package-lock.json
	rm -rf $(UPGRADE_VENV)
	$(PYTHON) -m venv $(UPGRADE_VENV)
	$(UPGRADE_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(UPGRADE_VENV)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -e '.[dev,bench]'
	$(UPGRADE_VENV)/bin/python scripts/lock-diff.py $(DEV_LOCK)
	$(UPGRADE_VENV)/bin/datadiver-graph schema --check
	$(UPGRADE_VENV)/bin/python -m pytest $(PYTEST_ARGS)

# The other Pythons requires-python admits (`make test` covers $(PYTHON), 3.11 in CI): each in
# its own venv from the same lock, running the tests most sensitive to the interpreter.
OTHER_PYTHONS := 3.12 3.13
PYTHONS_TESTS := tests/test_fanout.py tests/test_subscriptions.py tests/test_live_ws.py \
	tests/test_clients_node.py tests/test_clients_gql.py tests/test_ws_text_frames.py

# Kept after the run (make would delete an intermediate file of a pattern-rule chain).
.PRECIOUS: .venv-%/.installed
.venv-%/.installed: pyproject.toml $(DEV_LOCK)
	@py=$$(scripts/find-python $*) && { test -x .venv-$*/bin/python || $$py -m venv .venv-$*; }
	$(call install_locked,.venv-$*)

test-python-%: .venv-%/.installed $(CLIENTS)/node_modules/.package-lock.json
	.venv-$*/bin/python -m pytest $(PYTHONS_TESTS) $(PYTEST_ARGS)

test-pythons: $(addprefix test-python-,$(OTHER_PYTHONS))

# Fails at once, naming a missing interpreter (CI runs it before the long steps).
check-pythons:
	@for v in $(OTHER_PYTHONS); do scripts/find-python $$v >/dev/null || exit 1; done

clean:
	rm -rf $(VENV) .venv-* .data .pytest_cache .mypy_cache .ruff_cache $(CLIENTS)/node_modules
