# Quick start: `make demo` and `make test`. Each installs what is missing, idempotently.
# Development: `make check` (lint, format, types, import layers; .ci/run runs it before the
# tests) and `make test-fast` (the suite without the slow end-to-end tests).
# Installed:
#   .venv/          runtime Python (torch CPU build first, then qledger + pinned deps)
#   node_modules/   solc-js, OpenZeppelin contracts, anvil, ethers/merkle-tree (cross-checks)
#   .cache/solcx/   a node `solc` wrapper that py-solc-x and ape-solidity call (no download)
#   .ape-venv/      ape in its own tool venv (ape and flwr cannot share one environment)
#   /usr/bin/chromium  Debian's chromium for the dashboard's browser tests
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SOLC_VERSION := 0.8.28

.PHONY: install browser demo test test-fast check lint bench compile ape-test clean

install: $(VENV)/.installed node_modules/.installed .cache/solcx/solc-v$(SOLC_VERSION) .ape-venv/.installed

# Debian's chromium for the dashboard's browser tests (never a browser a tool downloads).
# Where apt is not available the browser tests skip and say why, so this may fail softly.
browser:
	-bash scripts/install_browser.sh

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip wheel setuptools
	# torch first and pinned: the CPU wheel on disk. Unpinned, a dependency pulls a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

.cache/solcx/solc-v$(SOLC_VERSION): scripts/install_solc.sh scripts/solc-wrapper.js node_modules/.installed
	bash scripts/install_solc.sh $(SOLC_VERSION)

.ape-venv/.installed: Makefile
	test -x .ape-venv/bin/python || $(PYTHON) -m venv .ape-venv
	.ape-venv/bin/python -m pip install -q --upgrade pip wheel setuptools
	# pytest < 8.4: ape 0.8.51's pytest plugin reads FixtureManager._arg2fixturedefs, gone in 8.4.
	.ape-venv/bin/python -m pip install -q eth-ape==0.8.51 ape-solidity==0.8.6 ape-foundry==0.8.12 coincurve==21.0.0 safe-pysha3==1.0.7 pytest==8.3.5
	touch $@

demo: install
	$(VENV)/bin/qledger demo

# The suite without the extended matrices, in 2 processes (pytest-xdist; each has a PostgreSQL
# database of its own, tests/conftest.py): it mostly waits on process start-ups, anvil and Ray,
# so 2 workers halve it even on 2 cores. --durations lists the slowest tests so a growing suite
# shows where its time went.
test: install browser
	$(VENV)/bin/pytest -q -n 2 -m "not extended" --durations=25

# The deep matrices one representative of each already runs in `make test`: every other SIGKILL
# point of the anchorer, the other consortia of the root-cause drift grid. CI runs it too.
test-extended: install
	$(VENV)/bin/pytest -q -n 2 -m extended

# Everything but the tests marked slow (end-to-end runs of the service, anvil, Flower's
# deployment engine); a few minutes on a 2-core machine against ~16 for the whole suite.
test-fast: install
	$(VENV)/bin/pytest -q -n 2 -m "not slow and not extended"

# The habits, enforced: lint, format, types (mypy with the pydantic plugin, strictness stated
# in pyproject.toml) and the import layers (import-linter, [tool.importlinter]).
check: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-logo

lint: install
	$(VENV)/bin/ruff check .

compile: install
	$(PY) -m ledger.artifacts

bench: install
	$(PY) scripts/bench_ledger.py

clean:
	rm -rf .qledger .pytest_cache .ruff_cache .mypy_cache .import_linter_cache
