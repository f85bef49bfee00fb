# Everything runs in a virtualenv this Makefile builds: a fresh machine needs
# only Python 3.11+ and make.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.demo-installed

.PHONY: help install demo test test-fast test-services lint format typecheck clean browser-deps dist-deps vendor vendor-check

help:
	@echo "make demo    run example_project against the built-in Gateway emulator"
	@echo "             (make demo RELAY=1: with relay mode, served by uvicorn)"
	@echo "make test    lint, type-check and run the whole test suite"
	@echo "make vendor  rebuild the vendored AI SDK bundle (needs node and npm)"
	@echo "make vendor-check  fail unless the lock rebuilds the committed bundle"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=25.1"
	$(BIN)/python -m pip install --quiet -e ".[emulator]" --group test --group lint
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(STAMP)
	$(BIN)/mypy

# The default run: SQLite and local-memory cache, no services needed.
test-fast: $(STAMP)
	$(BIN)/python -m pytest

# The same suite on PostgreSQL and Redis (127.0.0.1 by default); skipped with
# a reason when they are not running, unless GATEWAY_REALTIME_REQUIRE_SERVICES=1.
test-services: $(STAMP)
	@$(BIN)/python -m tests.services_available; rc=$$?; \
	if [ $$rc -eq 3 ]; then echo "test-services: skipped, PostgreSQL/Redis not running (reason above)"; \
	elif [ $$rc -ne 0 ]; then exit $$rc; \
	else GATEWAY_REALTIME_TEST_SERVICES=1 $(BIN)/python -m pytest -p no:cacheprovider; fi

# Debian's chromium (apt-get, as root) and the AI SDK bundle (npm, into
# .cache/browser) for the browser tests; each step is cached, and prints why
# it was skipped where impossible (the browser tests then skip with that reason).
browser-deps: $(STAMP)
	$(BIN)/python -m tools.test_deps browser

# The sdist and wheel of this checkout and a fresh virtualenv with the wheel,
# for the packaging and quickstart tests (.cache/dist; rebuilt when a source
# file changes). Building and installing reach the package index: make does
# it, the tests never do.
dist-deps: $(STAMP)
	$(BIN)/python -m tools.test_deps dist

test: lint typecheck browser-deps dist-deps test-fast test-services

# The demo needs only what the app and the emulator import: the project's
# dependencies and its "emulator" extra (Django, DRF, requests, aiohttp), read
# from pyproject.toml; no test or lint tools. The app runs from the checkout
# (python -m puts it first on sys.path), so nothing is built. It shares the
# venv, so `make demo` and `make test` work in either order.
$(DEMO_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
	  print(*p["dependencies"], *p["optional-dependencies"]["emulator"], sep="\n")' \
	  > $(VENV)/demo-requirements.txt
	$(BIN)/python -m pip install --quiet --no-compile -r $(VENV)/demo-requirements.txt
	touch $@

# `make demo RELAY=1` shows relay mode too (docs/relay.md): it adds the
# "relay" extra (Channels, channels-redis, websockets) and uvicorn, read from
# pyproject.toml like the rest, and serves the site with uvicorn.
DEMO_RELAY_STAMP := $(VENV)/.demo-relay-installed
$(DEMO_RELAY_STAMP): pyproject.toml $(DEMO_STAMP)
	$(BIN)/python -c 'import tomllib; t = tomllib.load(open("pyproject.toml", "rb")); \
	  print(*t["project"]["optional-dependencies"]["relay"], \
	        *[r for r in t["dependency-groups"]["test"] if r.startswith("uvicorn")], sep="\n")' \
	  > $(VENV)/demo-relay-requirements.txt
	$(BIN)/python -m pip install --quiet --no-compile -r $(VENV)/demo-relay-requirements.txt
	touch $@

ifeq ($(RELAY),1)
demo: $(DEMO_RELAY_STAMP)
	$(BIN)/python -m example_project.demo --port $(PORT) --relay
else
demo: $(DEMO_STAMP)
	$(BIN)/python -m example_project.demo --port $(PORT)
endif

# The performance benchmark (docs/performance.md), all on loopback: time to a
# token against the AI SDK's anchor, a Gateway stall, the relay. Quick by
# default (a CI smoke test, no thresholds), BENCH_FULL=1 for the long run.
# It installs its own tools (the "bench" group; @ai-sdk/gateway into .bench/).
.PHONY: bench
$(VENV)/.bench-installed: pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet -e . --group bench
	touch $@

bench: $(VENV)/.bench-installed
	$(BIN)/python -m bench --save .bench/last-run.json

# Rebuild the vendored AI SDK bundle (gateway_realtime/static/gateway_realtime/
# vendor/) from vendor/ai-sdk/'s committed lock: needs node, npm and the npm
# registry. `make vendor-check` builds it aside and fails unless it gives the
# committed bytes (CI runs it; the test suite never reaches a registry).
vendor:
	$(PYTHON) vendor/build.py

vendor-check:
	$(PYTHON) vendor/build.py --check

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
