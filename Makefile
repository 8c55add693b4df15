# Two promises (README): `make demo` and `make test` work on a fresh machine with Python 3.11 and Node 20.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: test test-alone check demo demo-fresh stack stack-func stop lint bench setup clean

setup: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# in a shuffled order, a new one each run (TEST_ORDER=random; the seed is printed at the end: `make test
# TEST_ORDER=<seed>` repeats that order), so every run shows that no test depends on another's leftovers (#18.6);
# the 20 slowest tests are listed, to see where CI's time goes
# on TEST_WORKERS pytest-xdist workers (much of the suite's time is waiting on servers and jobs: 2 workers on 2
# cores took the tests from 18 to 13 minutes); each module stays on one worker, so its shared fixtures (an MLflow
# server, a trained model) start once, and the stack tests go first, spread (tests/conftest.py
# `_group_for_workers`); TEST_WORKERS=0 runs it in this process
TEST_WORKERS ?= 2
TEST_ORDER ?= random
test: setup tools check
	$(PY) -m local.azurite run -- $(PY) -m pytest -q --durations=20 -n $(TEST_WORKERS) --dist loadgroup --shuffle=$(TEST_ORDER)

# each test module in a pytest process of its own, one after another (#18.6: every test passes alone, with no
# other module's fixtures or leftovers before it); prints each module's result and the modules that failed
test-alone: setup tools
	$(PY) -m local.azurite run -- sh -c 'failed=""; for f in tests/test_*.py; do \
	  log=$$(mktemp); if $(PY) -m pytest -q -p no:cacheprovider "$$f" > "$$log" 2>&1; then echo "passed alone: $$f"; rm -f "$$log"; \
	  else echo "FAILED alone: $$f (its output: $$log)"; tail -n 15 "$$log"; failed="$$failed $$f"; fi; done; \
	  if [ -n "$$failed" ]; then echo "failed alone:$$failed"; exit 1; fi; echo "every module passed alone"'

lint: setup
	$(PY) -m ruff check .

# the checks CI runs before the tests: lint, the layer contracts (pyproject.toml [tool.importlinter]) and types
check: lint
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

# every bench, each ending with one `RESULT <bench> ...` line; the storage ones need Azurite (started if absent)
bench: setup
	$(PY) -m local.azurite run -- sh -c 'for b in cold_start aml_calls coalescing drift chain; do \
		echo "== bench/$$b.py"; $(PY) bench/$$b.py || exit 1; done'

# the whole chain offline: starts the stack if needed, uploads sample data, shows each reaction; exit 0 or the failed step
demo: setup
	$(PY) -m local.demo

# the demo from an empty registry: forgets earlier local runs (MLflow registry, Reflex's containers) first
demo-fresh: setup
	$(PY) -m local.demo --fresh

# the local stack in the background (Azurite, MLflow, scoring server, local host); logs in run/current/
stack: setup
	$(PY) -m local.stack start

# for Azure Functions Core Tools users: the same stack without our host; then run `func start`
stack-func: setup
	$(PY) -m local.stack start --func

stop:
	$(PY) -m local.stack stop

clean:
	rm -rf $(VENV) .venv-tools node_modules run .pytest_cache

include Makefile.infra
