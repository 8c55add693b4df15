# Two promises (README): `make demo` and `make test` work on a fresh machine with Python 3.11 and Node 20.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: test demo stack stop lint bench setup clean

setup: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

test: setup tools
	$(PY) -m local.azurite run -- $(PY) -m pytest -q

lint: setup
	$(PY) -m ruff check .

bench: setup
	$(PY) bench/cold_start.py

clean:
	rm -rf $(VENV) .venv-tools node_modules run .pytest_cache

include Makefile.infra
