# Fresh machine: `make repro` or `make test` creates .venv, installs the package, then runs.
.PHONY: env repro test clean-env

VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

repro: env
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

test: env
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest

clean-env:
	rm -rf $(VENV)
