# The README's commands. Each target installs what it needs, so a fresh machine runs them as they are.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTHON := $(BIN)/python
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help venv system-deps node-deps az-cli deps test test-fast lint demo run bench soak screenshots stack-up stack-down stack-reset clean

help:
	@echo "make demo   - start the local stack and import every seed scenario end to end"
	@echo "make run    - start the local stack and run the app in the foreground (your own requests; Ctrl-C stops)"
	@echo "make test   - install everything and run the whole test suite"
	@echo "make test-fast - the tests that need no local stack (the venv only; about 45 s of CPU)"
	@echo "make lint   - ruff, and mypy (strict) on shared/ and cli/"
	@echo "make bench  - benchmarks, written to docs/benchmarks.md"
	@echo "make screenshots - the status page's pictures in docs/images/, taken in headless Chromium on the local stack"
	@echo "make stack-up / stack-down - the local Azure stack by hand; make stack-reset - stop it and delete its data"

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

# docker-registry (CNCF distribution) and skopeo come from Debian; we are root on these machines. So do chromium and
# chromium-driver: the status page's browser tests (tests/ops) and `python -m dev.screenshots` drive them.
system-deps:
	@command -v docker-registry >/dev/null && command -v skopeo >/dev/null && command -v chromium >/dev/null \
	  && command -v chromedriver >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -qq docker-registry skopeo chromium chromium-driver >/dev/null; }

node-deps: dev/node_modules/.package-lock.json

dev/node_modules/.package-lock.json: dev/package.json
	cd dev && npm install --silent --no-audit --no-fund
	touch $@

# The Azure CLI, in its own venv: the tests check that `az acr import` works against the ACR stand-in.
AZ_VENV := .venv-az
$(AZ_VENV)/bin/az:
	$(PY) -m venv $(AZ_VENV)
	$(AZ_VENV)/bin/pip install -q "azure-cli>=2.60,<3"

az-cli: $(AZ_VENV)/bin/az

deps: venv system-deps node-deps az-cli

test: deps
	$(PYTHON) -m pytest -q

# The tests that need no stack: tests/conftest.py marks `stack` every test that uses the stack (and fails one
# that starts a part of it unmarked), so this needs only the venv and starts nothing. Bytecode is kept, outside
# the tree, so pytest does not rewrite and compile every module on each run (half the time of the run).
test-fast: venv
	PYTHONDONTWRITEBYTECODE= PYTHONPYCACHEPREFIX="$(abspath $(VENV))/pycache" $(PYTHON) -m pytest -q -m "not stack"

# mypy's settings (strict, which packages) are in pyproject.toml.
lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy

demo: deps
	$(PYTHON) -m dev.demo

screenshots: venv system-deps node-deps
	$(PYTHON) -m dev.screenshots

# FORCE_SETTINGS=1 rewrites an existing local.settings.json with the stack's settings; SETTINGS=FILE uses
# another file than ./local.settings.json (the tests do, to leave yours alone).
run: venv system-deps node-deps  # not the Azure CLI: only the tests need it
	FORCE_SETTINGS=$(FORCE_SETTINGS) $(PYTHON) -m dev.run $(if $(SETTINGS),--settings "$(SETTINGS)")

# The scale-out benchmark's short profile (300 requests, buckets a tenth of ARM's, refills ARM's: about a minute);
# `make bench SCALEOUT_REQUESTS=2000 SCALEOUT_BUCKET_SCALE=1` is issue 15's full run (docs/benchmarks.md).
# The operator's view benchmark seeds 1k and 10k status rows; `make bench OPS_ROWS=1000,10000,50000` (passed on
# in the environment) is the larger profile.
SCALEOUT_REQUESTS ?= 300
SCALEOUT_BUCKET_SCALE ?= 0.1
bench: deps
	SCALEOUT_REQUESTS=$(SCALEOUT_REQUESTS) SCALEOUT_BUCKET_SCALE=$(SCALEOUT_BUCKET_SCALE) $(PYTHON) -m benchmarks

soak: deps
	$(PYTHON) -m dev.soak 1000

stack-up: deps
	$(PYTHON) -m dev.stack up

stack-down: venv
	$(PYTHON) -m dev.stack down

# The stack keeps its data (registries, Azurite, keys) in .stack/ between runs; this starts it afresh.
stack-reset: venv
	$(PYTHON) -m dev.stack down
	rm -rf "$${ACR_IMPORTER_STACK_DIR:-.stack}"

clean:
	-$(PYTHON) -m dev.stack down
	rm -rf $(VENV) $(AZ_VENV) .stack dev/node_modules
