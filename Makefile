# Two commands set everything up on a fresh machine: `make demo` and `make test`.
# Both create the environment at .venv first when it is missing (see tools/setup_env.sh).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: env test test-slow demo clean-env

env:
	@bash tools/setup_env.sh

test: env
	$(PY) -m pytest -q -m "not slow" tests

test-slow: env
	$(PY) -m pytest -q -m slow tests

demo: env
	$(PY) tools/demo.py

clean-env:
	rm -rf $(VENV)
