# The two commands of the README's Quick start, and a few helpers.
#   make demo   set up (venv + install) and run the pipeline end to end on the embedded stack
#   make test   set up and run lint, types and every test tier (what CI runs)

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint unit integration e2e up down clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/dropship demo

test: $(VENV)/.installed lint
	$(BIN)/pytest -v --durations=15

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/mypy

unit: $(VENV)/.installed
	$(BIN)/pytest -v tests/unit

integration: $(VENV)/.installed
	$(BIN)/pytest -v tests/integration

e2e: $(VENV)/.installed
	$(BIN)/pytest -v tests/e2e

up: $(VENV)/.installed
	$(BIN)/dropship dev up

down: $(VENV)/.installed
	$(BIN)/dropship dev down

clean: down
	rm -rf $(VENV) .dropship .mypy_cache .ruff_cache .pytest_cache
