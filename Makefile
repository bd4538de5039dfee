# Two commands for a new user: `make demo` (set up, start a server with a demo user) and
# `make test` (the whole suite). Everything else is a building block of those.
#
# `make demo` installs the runtime only (requirements.txt); `make test` adds the test
# toolchain (requirements-dev.txt: pytest, Playwright, schemathesis, hypothesis, ruff, ...)
# and the npm packages of clients/js and bench/socketio. Each install is done once per
# virtual environment and redone when its requirements file changes.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
RUNTIME := $(VENV)/.installed-runtime
DEV := $(VENV)/.installed-dev
# TypeScript, the one dev dependency of clients/js (its type check); skipped without npm.
JS_DEPS := clients/js/node_modules/.package-lock.json
# socket.io 4.8 and its client, for bench/compare_socketio.py and its end-to-end test.
SIO_DEPS := bench/socketio/node_modules/.package-lock.json

.PHONY: install install-dev demo test test-e2e lint

# What running Tether needs.
install: $(RUNTIME)

# What testing it needs (CI: .ci/run).
install-dev: $(DEV) $(JS_DEPS) $(SIO_DEPS)

$(RUNTIME): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(DEV): $(RUNTIME) requirements-dev.txt
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

$(JS_DEPS): clients/js/package.json clients/js/package-lock.json
	@if command -v npm >/dev/null 2>&1; then npm ci --prefix clients/js --no-audit --no-fund --loglevel=error; \
	else echo "npm not found: the JavaScript client's type check (tests/test_sdk_js_types.py) will be skipped"; fi

$(SIO_DEPS): bench/socketio/package.json bench/socketio/package-lock.json
	@if command -v npm >/dev/null 2>&1; then npm ci --prefix bench/socketio --no-audit --no-fund --loglevel=error; \
	else echo "npm not found: the Socket.IO comparison's test (tests/e2e/test_socketio_comparison.py) will be skipped"; fi

demo: install
	VENV=$(VENV) bash scripts/demo.sh

test: install-dev
	bash scripts/ensure-redis.sh
	$(PY) -m pytest

test-e2e: install-dev
	bash scripts/ensure-redis.sh
	$(PY) -m pytest -m e2e

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
