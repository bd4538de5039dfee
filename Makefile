# Two commands for a new user: `make demo` (set up, start a server with a demo user)
# and `make test` (the whole suite). Everything else is a building block of those.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: install demo test test-e2e lint bench-stream

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

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
