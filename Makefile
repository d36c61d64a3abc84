# Everything installs into .venv/ from the hashed lock file; `setup` is idempotent and does nothing
# when neither the lock file nor pyproject.toml changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export GATEWAY_SECRET_KEY ?= dev-only-secret-change-me-0123456789abcdef
export GATEWAY_ALLOW_PRIVATE_UPSTREAMS ?= 1

.PHONY: setup vendor run test test-unit test-integration test-e2e test-faults test-security lint bench loadtest lock clean

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

# The dashboard's third-party files (pinned in frontend/package-lock.json) copied into the package with
# their sha256s (static/vendor/LOCK.json); the copies are committed, so serving needs no node.
vendor:
	cd frontend && npm ci --ignore-scripts --no-audit --no-fund
	$(PYTHON) frontend/vendor.py

# The demo: migrate, seed a seller/listing/buyer, start the fake upstream and the gateway.
run: setup
	$(BIN)/python -m aichat_gateway.server.devrun

# The whole suite under coverage.py (configured in pyproject.toml): the test runner and every Python
# process the tests start write their data to $(COVERAGE_DIR); it is combined at the end and
# tools/coverage_summary.py prints it per package and fails under the bar. The tests' verdict comes
# first: a failing suite fails the target whatever the coverage.
COVERAGE_DIR := .coverage-data
# tools/ holds the coverage plugin every measured process loads (tools/coverage_flush.py).
COVERAGE := PYTHONPATH=$(CURDIR)/tools$${PYTHONPATH:+:$$PYTHONPATH} $(BIN)/python -m coverage

test: setup
	rm -rf $(COVERAGE_DIR)
	$(COVERAGE) run -m pytest -q -p no:cacheprovider; tests=$$?; \
	$(COVERAGE) combine --quiet \
		&& $(COVERAGE) json --quiet --fail-under=0 -o $(COVERAGE_DIR)/report.json \
		&& $(COVERAGE) html --quiet --fail-under=0 -d $(COVERAGE_DIR)/html \
		&& $(BIN)/python tools/coverage_summary.py $(COVERAGE_DIR)/report.json; gate=$$?; \
	if [ $$tests -ne 0 ]; then exit $$tests; fi; exit $$gate

test-unit: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/unit

test-integration: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/integration

# The dashboard in a real browser: Debian's chromium driven by Playwright, every page checked by axe-core.
test-e2e: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/e2e

# Fault injection only: tests/faults (broken upstreams, Redis restarts, a killed gateway) and the
# outage, crash and stall tests elsewhere marked `faults`. `make test` runs them too.
test-faults: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider -m faults tests/faults tests/integration

# The attack suite: injection, SSRF, BOLA, mass assignment, JWT, CSRF, limits, forged webhooks,
# login brute force, and schemathesis fuzzing every /api operation of /openapi.json (~1 minute).
test-security: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/security

# ruff, mypy --strict, and the one-way imports between packages (contracts in .importlinter).
lint: setup
	$(BIN)/ruff check aichat_gateway tests loadtests tools
	$(BIN)/ruff format --check aichat_gateway tests loadtests tools
	$(BIN)/mypy
	$(BIN)/mypy --strict tools
	$(BIN)/lint-imports --no-logo

bench: setup
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python loadtests/bench.py
	$(BIN)/python loadtests/memory.py

# Locust personas, headless, against a fake upstream + gateway started for the run (loadtests/README.md).
# LOCUST_USERS (50), LOCUST_SPAWN_RATE (10), LOCUST_RUN_TIME (60s) size it; reports in loadtests/results/.
loadtest: setup
	$(BIN)/python loadtests/run_locust.py

# Regenerate the lock after editing pyproject.toml (needs `pip install uv`).
lock:
	uv pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 \
		--python-platform x86_64-manylinux_2_28 -o requirements.lock

clean:
	rm -rf $(VENV) build *.egg-info $(COVERAGE_DIR)
