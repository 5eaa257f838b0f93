# Two commands for a fresh machine: `make run` and `make test`. Everything else is set-up they call.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TOOLS := .tools

.PHONY: run test lint typecheck docs pytest emulators clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# The app needs the library and uvicorn only.
$(VENV)/.run-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e . "uvicorn[standard]>=0.30"
	touch $@

# The tests need every extra, the linters and the emulators' Python parts.
$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

# Azurite (the Azure Blob emulator) from npm, into a git-ignored project folder.
$(TOOLS)/node_modules/.bin/azurite-blob:
	npm install --silent --no-audit --no-fund --prefix $(TOOLS) azurite@3
	touch $@

emulators: $(TOOLS)/node_modules/.bin/azurite-blob

run: $(VENV)/.run-installed
	$(BIN)/uvicorn example_app.main:app --host 127.0.0.1 --port 8000

lint: $(VENV)/.dev-installed
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: $(VENV)/.dev-installed
	$(BIN)/mypy

pytest: $(VENV)/.dev-installed emulators
	$(BIN)/pytest -q

docs: $(VENV)/.dev-installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

test: lint typecheck docs pytest

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache
