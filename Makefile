# Two commands for a new user: `make demo` (set up, start a server with a demo user)
# and `make test` (the whole suite). Everything else is a building block of those.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
# TypeScript, the one dev dependency of clients/js (its type check); skipped without npm.
JS_DEPS := clients/js/node_modules/.package-lock.json
# socket.io 4.8 and its client, for bench/compare_socketio.py and its end-to-end test.
SIO_DEPS := bench/socketio/node_modules/.package-lock.json

.PHONY: install demo test test-e2e lint bench-stream

install: $(VENV)/.installed $(JS_DEPS) $(SIO_DEPS)

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
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

test: install
	bash scripts/ensure-redis.sh
	$(PY) -m pytest

test-e2e: install
	bash scripts/ensure-redis.sh
	$(PY) -m pytest -m e2e

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
