# kiln's developer commands. `make help` lists them.
SHELL := /bin/bash
PYTHON3 ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
COVERAGE_GATE ?= 100
EXAMPLE_CONFIG ?= examples/mushrooms/config.yaml
# The known-good versions of every dependency, for the dev install, CI and test-all.
CONSTRAINTS := constraints.txt
# Pythons for test-all: pyenv's, when installed (nox looks for python3.X on PATH).
PYENV_ROOT ?= $(HOME)/.pyenv
PYENV_PATH := $(subst $(eval) ,:,$(wildcard $(PYENV_ROOT)/versions/3.1[1-3].*/bin))
LOADTEST_ARGS ?=
# kinto-compat: memory or postgresql (on $$KILN_TEST_POSTGRESQL_URL).
KINTO_BACKEND ?= memory
# Where the tests write their temporary files (SQLite databases, throwaway PostgreSQL
# clusters, virtualenvs): a RAM disk when there is one that may hold programs, since
# on a busy disk the suite mostly waits for SQLite's flushes. Empty: the default.
ifndef TEST_TMPDIR
TEST_TMPDIR := $(shell f=$$(mktemp -p /dev/shm kiln-probe.XXXXXX 2>/dev/null) && \
	{ printf '\043!/bin/sh\n' > $$f; chmod +x $$f; $$f 2>/dev/null && echo /dev/shm; rm -f $$f; })
endif
TEST_ENV := $(if $(TEST_TMPDIR),TMPDIR=$(TEST_TMPDIR))
SMOKE := build/smoke

.DEFAULT_GOAL := help
.PHONY: help install install-dev serve test test-fast test-all loadtest-check-simulation lint format \
	typecheck docs constraints build contributors clean distclean maintainer-clean kinto-compat

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

$(VENV)/.install-dev.stamp: $(BIN)/python pyproject.toml $(CONSTRAINTS)
	@$(UNINSTALL_OLD_NAME)
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e ".[dev,loadtest]"
	@touch $@ $(VENV)/.install.stamp

install: $(VENV)/.install.stamp ## Create .venv and install kiln.

install-dev: $(VENV)/.install-dev.stamp ## Install kiln with the development and load-test extras, at the versions of constraints.txt.

serve: install ## Start the example service on http://127.0.0.1:8888 (SQLite, no other service).
	KILN_CONFIG=$(EXAMPLE_CONFIG) $(BIN)/kiln serve

kinto-compat: install-dev ## Run kinto-http 11.11.0's functional suite against examples/kinto (KINTO_BACKEND=memory|postgresql; sdist cached in .cache/).
	$(BIN)/python examples/kinto/compat/run.py --backend $(KINTO_BACKEND) $(PYTEST_ARGS)

test: install-dev ## Run the suite under branch coverage, gated at COVERAGE_GATE % (absent services skip locally; CI=true makes that a failure).
	@rm -f .coverage .coverage.*
	$(TEST_ENV) $(BIN)/python -m coverage run -m pytest $(PYTEST_ARGS)
	@$(BIN)/python -m coverage combine -q
	$(BIN)/python -m coverage report --fail-under=$(COVERAGE_GATE)

test-fast: install-dev ## Run the tests without coverage, stopping at the first failure.
	$(TEST_ENV) $(BIN)/python -m pytest -x -q $(PYTEST_ARGS)

test-all: install-dev ## Run the suite on Python 3.11, 3.12 and 3.13 (nox; slow: CI runs one version).
	PATH="$(PYENV_PATH):$$PATH" $(BIN)/nox $(NOX_ARGS)

loadtest-check-simulation: install-dev ## Serve loadtests/ on SQLite, load every action briefly, check the invariants.
	$(BIN)/python -m loadtests.run $(LOADTEST_ARGS)

lint: install-dev ## Check style with ruff.
	$(BIN)/ruff check src tests examples bench docs loadtests noxfile.py
	$(BIN)/ruff format --check src tests examples bench docs loadtests noxfile.py

format: install-dev ## Reformat the code with ruff.
	$(BIN)/ruff check --fix src tests examples bench docs loadtests noxfile.py
	$(BIN)/ruff format src tests examples bench docs loadtests noxfile.py

typecheck: install-dev ## Type-check src/ and loadtests/ with mypy --strict.
	$(BIN)/mypy

docs: install ## Regenerate docs/settings.md from the settings registry.
	$(BIN)/kiln settings --format markdown > docs/settings.md

constraints: install-dev ## Re-resolve constraints.txt, the known-good versions (uv), for Python 3.11 to 3.13.
	$(BIN)/uv pip compile pyproject.toml --extra dev --extra loadtest --universal \
		--python-version 3.11 --upgrade --no-annotate \
		--custom-compile-command "make constraints" --output-file $(CONSTRAINTS) --quiet

build: install-dev ## Build the sdist and wheel, twine-check them, install the wheel in a fresh venv and smoke-test it.
	rm -rf dist $(SMOKE)
	$(BIN)/python -m build --outdir dist .
	$(BIN)/twine check --strict dist/*
	$(BIN)/python .ci/check_dist.py dist
	$(PYTHON3) -m venv $(SMOKE)/venv
	$(SMOKE)/venv/bin/python -m pip install --quiet -c $(CONSTRAINTS) dist/*.whl pytest
	test "$$($(SMOKE)/venv/bin/kiln --version)" = \
		"kiln, version $$($(BIN)/python -c 'from kiln.__about__ import __version__ as v; print(v)')"
	cd $(SMOKE) && venv/bin/kiln init service && cd service && ../venv/bin/python -m pytest -q -p no:cacheprovider
	@echo "build: OK: $$(ls dist | tr '\n' ' ')"

contributors: ## Write CONTRIBUTORS.md from the git history (one line per person).
	@{ printf '# Contributors\n\nGenerated from the git history by `make contributors`.\n\n'; \
	  git shortlog -sne HEAD | awk '{$$1=""; sub(" ", ""); print}' \
	    | awk -F'<' '!x[$$1]++' | awk -F'<' '!x[$$2]++' | sort | sed 's/^/- /'; \
	} > CONTRIBUTORS.md
	@echo "CONTRIBUTORS.md: $$(grep -c '^- ' CONTRIBUTORS.md) contributors"

clean: ## Remove caches and bytecode.
	find . \( -path ./$(VENV) -o -path ./.nox \) -prune -o \( -name '__pycache__' -o -name '*.pyc' \) -exec rm -rf {} +
	rm -rf .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.* htmlcov

distclean: clean ## Also remove build artefacts (*.egg-info, *.egg, build/, dist/).
	rm -rf build dist *.egg-info *.egg src/*.egg-info .cache

maintainer-clean: distclean ## Also remove the virtualenvs (.venv/ and nox's .nox/).
	rm -rf $(VENV) .nox
