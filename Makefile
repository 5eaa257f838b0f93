# Two commands for a fresh machine: `make run` and `make test`. Everything else is set-up they call.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TOOLS := .tools

.PHONY: run test lint typecheck docs pytest emulators browser tus-js-client clean

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

# tus-js-client from npm for the example page's resumable mode (the app serves it at
# /vendor/tus.min.js) and its browser test. `make run` goes on without npm: the page's
# multipart upload works, and its resumable section says what is missing.
TUS_JS_CLIENT := $(TOOLS)/tus-js-client/node_modules/tus-js-client/dist/tus.min.js
$(TUS_JS_CLIENT):
	npm install --silent --no-audit --no-fund --prefix $(TOOLS)/tus-js-client tus-js-client@4
	touch $@

tus-js-client:
	@if [ -f $(TUS_JS_CLIENT) ]; then :; \
	elif command -v npm >/dev/null 2>&1; then $(MAKE) --no-print-directory $(TUS_JS_CLIENT); \
	else echo "npm missing: the example page's resumable mode needs tus-js-client" >&2; fi

run: $(VENV)/.run-installed tus-js-client
	$(BIN)/uvicorn example_app.main:app --host 127.0.0.1 --port 8000

lint: $(VENV)/.dev-installed
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: $(VENV)/.dev-installed
	$(BIN)/mypy

# Debian's Chromium for the browser tests (nothing downloads a browser at test time).
browser:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	elif [ "$$CI" = true ]; then echo "chromium missing and not installable" >&2; exit 1; \
	else echo "chromium missing: browser tests will skip" >&2; fi

# Swagger UI's assets from npm, served to the offline browser test in place of FastAPI's CDN.
SWAGGER_UI := $(TOOLS)/swagger-ui/node_modules/swagger-ui-dist/swagger-ui-bundle.js
$(SWAGGER_UI):
	npm install --silent --no-audit --no-fund --prefix $(TOOLS)/swagger-ui swagger-ui-dist@5
	touch $@

pytest: $(VENV)/.dev-installed emulators browser $(SWAGGER_UI) $(TUS_JS_CLIENT)
	$(BIN)/pytest -q

docs: $(VENV)/.dev-installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

test: lint typecheck docs pytest

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache

# Benchmarks (issue 4) in their own venv, so filestore 2.0.0 and matplotlib never reach .venv;
# the cloud cases (6-9) need the s3, gcp and azure extras, moto and fake-gcs-server there.
BENCH_VENV := $(TOOLS)/bench-venv

.PHONY: bench

$(BENCH_VENV)/.installed: pyproject.toml benchmarks/requirements.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q --upgrade pip
	$(BENCH_VENV)/bin/pip install -q -e ".[s3,gcp,azure]" -r benchmarks/requirements.txt
	touch $@

bench: $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/python -m benchmarks
