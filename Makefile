# Two commands set everything up on a fresh machine: `make demo` and `make test`.
# Both create the environment at .venv first when it is missing (see tools/setup_env.sh).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: env lint test test-slow demo clean-env

env:
	@bash tools/setup_env.sh

lint: env
	$(PY) -m ruff check .

test: env
	$(PY) -m pytest -q -m "not slow" tests

# The tests marked slow: the 300-iteration two-process run, the detector and epoch-based
# resume checks, the worker-seeding and MMEngine-only controls (several minutes on 2 cores).
test-slow: env
	$(PY) -m pytest -q -m slow tests

demo: env
	$(PY) tools/demo.py

clean-env:
	rm -rf $(VENV)
