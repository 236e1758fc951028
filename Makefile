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

# The stages fork from one warm interpreter (pipeline/warm.py): the same outputs as `dvc repro`, without each stage
# importing torch and open_clip again.
repro: env
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/fashion-cir warm -- dvc repro

test: env
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest

clean-env:
	rm -rf $(VENV)
