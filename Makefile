# The two commands of the README: `make run` starts everything, `make test` tests it.
# Both install what they need: a virtualenv with the pinned packages, redis-server, and
# for the tests Chromium (pages in a browser) and Node.js (the CDK of infra/).

VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format redis-server c-compiler chromium node infra-check openapi clean

run: $(STAMP) redis-server
	$(BIN)/spacetime up

test: lint redis-server chromium infra-check
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

# A virtualenv at $(1). Debian ships venv apart (python3-venv); as root we install it when missing.
define make-venv
	$(PYTHON) -m venv $(1) || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null && \
	  $(PYTHON) -m venv --clear $(1); }
	$(1)/bin/pip install --quiet --upgrade pip
endef

# Reinstall whenever the project, its C kernel or its pins change.
$(STAMP): pyproject.toml setup.py compute/_simd.c constraints.txt | c-compiler
	$(call make-venv,$(VENV))
	$(BIN)/pip install --quiet -c constraints.txt -e ".[test,bench]"
	touch $@

# The AWS deployment as code (infra/, docs/deployment-aws.md), checked offline in its own
# virtualenv. infra/tests runs `python app.py` once, with no network where the machine can
# make a network namespace: synthesis with cdk-nag's AwsSolutions rules (a finding that is
# not acknowledged fails it), then cfn-lint on the templates and assertions on them.
# jsii runs the CDK's JavaScript on the machine's Node; the variable silences its notice
# that Node 20 has reached end of life.
INFRA_VENV := infra/.venv
INFRA_STAMP := $(INFRA_VENV)/.installed

infra-check: $(INFRA_STAMP) node
	cd infra && JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20 .venv/bin/pytest

$(INFRA_STAMP): infra/requirements.txt constraints.txt
	$(call make-venv,$(INFRA_VENV))
	$(INFRA_VENV)/bin/pip install --quiet -c constraints.txt -r infra/requirements.txt
	touch $@

# Install a Debian package when its command is missing (as root), else say what to do.
define debian_package
	@command -v $(1) >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2) >/dev/null; \
	  else \
	    echo "$(1) is missing: install it (e.g. sudo apt-get install $(2)) and rerun" >&2; exit 1; \
	  fi; }
endef

redis-server:
	$(call debian_package,redis-server,redis-server)

# The even-sum kernel's C extension (compute/_simd.c) needs a C compiler and Python's
# headers; as root we install Debian's when missing. (pip without them still installs
# the project, on the slower numba kernel.)
PYTHON_H_OK := $(PYTHON) -c 'import os, sysconfig; os.stat(os.path.join(sysconfig.get_path("include"), "Python.h"))' 2>/dev/null
c-compiler:
	$(call debian_package,cc,build-essential)
	@$(PYTHON_H_OK) || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-dev >/dev/null; \
	  else \
	    echo "Python.h is missing: install it (e.g. sudo apt-get install python3-dev) for the fast kernel" >&2; \
	  fi; }

# The browser tests open reports and /docs in Debian's Chromium (headless, no sandbox).
chromium:
	$(call debian_package,chromium,chromium)

# The CDK (through jsii) needs Node.js 18 or later; as root we install Debian's when missing.
NODE_OK := node -e 'process.exit(process.versions.node.split(".")[0] >= 18 ? 0 : 1)' 2>/dev/null
node:
	@$(NODE_OK) || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs >/dev/null; \
	  fi; \
	  $(NODE_OK) || { echo "Node.js 18 or later is needed for make infra-check (the CDK runs on it)" >&2; exit 1; }; }

# Regenerate the committed OpenAPI document (a test fails when it is stale).
openapi: $(STAMP)
	$(BIN)/spacetime openapi > backend/api/openapi.yml

clean:
	rm -rf $(VENV) $(INFRA_VENV) infra/cdk.out data .pytest_cache
