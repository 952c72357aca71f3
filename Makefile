# The two commands of the README: `make run` starts everything, `make test` tests it.
# Both install what they need: a virtualenv with the pinned packages, and redis-server.

VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format bench-deps redis-server chromium openapi clean

run: $(STAMP) redis-server
	$(BIN)/spacetime up

test: lint redis-server chromium
	$(BIN)/pytest

# Lint, format and types: part of `make test`, so CI runs them.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Apply ruff's fixes and formatting.
format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Reinstall whenever the project or its pins change.
# Debian ships venv apart (python3-venv); as root we install it when it is missing.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV) || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null && \
	  $(PYTHON) -m venv --clear $(VENV); }
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[test,bench]"
	touch $@

# Install a Debian package when its command is missing (as root), else say what to do.
define debian_package
	@command -v $(1) >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(1) >/dev/null; \
	  else \
	    echo "$(1) is missing: install it (e.g. sudo apt-get install $(1)) and rerun" >&2; exit 1; \
	  fi; }
endef

redis-server:
	$(call debian_package,redis-server)

# The browser tests open reports and /docs in Debian's Chromium (headless, no sandbox).
chromium:
	$(call debian_package,chromium)

# Regenerate the committed OpenAPI document (a test fails when it is stale).
openapi: $(STAMP)
	$(BIN)/spacetime openapi > backend/openapi.yml

clean:
	rm -rf $(VENV) data .pytest_cache
