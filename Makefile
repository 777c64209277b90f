# coffer: `make run` starts the stack, `make test` runs every test.
# Both create the virtual environment and install what they need first.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench deb clean

# Three distributions (docs/architecture.md): the client package, the daemon
# (which depends on it) and the reference upstream.
$(STAMP): client/pyproject.toml pyproject.toml upstream/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ./client -e '.[dev]' -e ./upstream
	touch $@

run: $(STAMP)
	$(PY) scripts/run.py

test: $(STAMP)
	scripts/provision
	$(PY) -m pytest $(PYTEST_ARGS)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: $(STAMP)
	for b in bench/*.py; do $(PY) $$b || exit 1; done

# Needs no .venv: build-deb makes its own with Debian's python3.
deb:
	packaging/build-deb

clean:
	rm -rf $(VENV) build dist packaging/out .pytest_cache .mypy_cache .ruff_cache
