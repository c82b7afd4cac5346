# Quick start: `make serve` runs the server, `make test` runs the whole suite.
# Both create .venv and install the project (with its test extra) when missing or stale.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: serve cluster test lint bench clean-var

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/tilehall serve

# Two nodes behind HAProxy (Debian's haproxy package) on port 8888: see README.
cluster: $(STAMP)
	$(VENV)/bin/tilehall cluster $(CLUSTER_ARGS)

test: $(STAMP)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(VENV)/bin/tilehall bench $(BENCH_ARGS)

clean-var:
	rm -rf var
