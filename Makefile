# kiln's developer commands. `make help` lists them.
SHELL := /bin/bash
PYTHON3 ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
COVERAGE_GATE ?= 100
EXAMPLE_CONFIG ?= examples/mushrooms/config.yaml

.DEFAULT_GOAL := help
.PHONY: help install install-dev serve test test-fast lint format typecheck docs clean distclean maintainer-clean

help: ## Show this help (coloured on a terminal only).
	@if [ -t 1 ]; then on=$$'\033[36m'; off=$$'\033[0m'; else on=; off=; fi; \
	awk -v on="$$on" -v off="$$off" 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %s%-20s%s %s\n", on, $$1, off, $$2}' $(MAKEFILE_LIST)

$(BIN)/python:
	@$(PYTHON3) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "kiln needs Python >= 3.11; set PYTHON3=/path/to/python3.11")'
	$(PYTHON3) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The distribution was called `kiln` before `kiln-framework`: drop that name from older venvs.
UNINSTALL_OLD_NAME = $(BIN)/python -m pip uninstall --quiet --yes kiln 2>/dev/null || true

$(VENV)/.install.stamp: $(BIN)/python pyproject.toml
	@$(UNINSTALL_OLD_NAME)
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(VENV)/.install-dev.stamp: $(BIN)/python pyproject.toml
	@$(UNINSTALL_OLD_NAME)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $@ $(VENV)/.install.stamp

install: $(VENV)/.install.stamp ## Create .venv and install kiln.

install-dev: $(VENV)/.install-dev.stamp ## Install kiln with the development extras.

serve: install ## Start the example service on http://127.0.0.1:8888 (SQLite, no other service).
	KILN_CONFIG=$(EXAMPLE_CONFIG) $(BIN)/kiln serve

test: install-dev ## Run the suite under branch coverage, gated at COVERAGE_GATE % (absent services skip locally; CI=true makes that a failure).
	@rm -f .coverage .coverage.*
	$(BIN)/python -m coverage run -m pytest $(PYTEST_ARGS)
	@$(BIN)/python -m coverage combine -q
	$(BIN)/python -m coverage report --fail-under=$(COVERAGE_GATE)

test-fast: install-dev ## Run the tests without coverage, stopping at the first failure.
	$(BIN)/python -m pytest -x -q $(PYTEST_ARGS)

lint: install-dev ## Check style with ruff.
	$(BIN)/ruff check src tests examples bench docs
	$(BIN)/ruff format --check src tests examples bench docs

format: install-dev ## Reformat the code with ruff.
	$(BIN)/ruff check --fix src tests examples bench docs
	$(BIN)/ruff format src tests examples bench docs

typecheck: install-dev ## Type-check src/ with mypy --strict.
	$(BIN)/mypy

docs: install ## Regenerate docs/settings.md from the settings registry.
	$(BIN)/kiln settings --format markdown > docs/settings.md

clean: ## Remove caches and bytecode.
	find . -path ./$(VENV) -prune -o \( -name '__pycache__' -o -name '*.pyc' \) -exec rm -rf {} +
	rm -rf .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.* htmlcov

distclean: clean ## Also remove build artefacts.
	rm -rf build dist *.egg-info src/*.egg-info

maintainer-clean: distclean ## Also remove the virtualenv.
	rm -rf $(VENV)
