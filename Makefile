# The project's commands. The two a newcomer needs: `make run PATTERN=web-single`, `make test`.
# `make help` lists the rest.

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
GROUPS := serving,worker,storage,training,qa,dev
TEST_WORKERS ?= 4

.DEFAULT_GOAL := help
.PHONY: help setup list run test load lint bench clean

help: ## this list
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is needed: install python3.11 (or run make PYTHON=/path/to/python3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==25.3
	$(PY) -m pip install --quiet -c constraints.txt -e '.[$(GROUPS)]'
	$(PY) -m shared.training ensure
	@touch $@

setup: $(STAMP) ## create .venv with the pinned dependencies and train the bundled models

list: $(STAMP) ## every catalogue entry: category, folder, status, summary
	@$(PY) -m shared.cli list

run: $(STAMP) ## start PATTERN in the foreground: Docker if an engine answers, else local mode (LOCAL=1 forces it, PORT_OFFSET=100 moves its ports)
	@test -n "$(PATTERN)" || { echo "usage: make run PATTERN=web-single  (make list shows them all)"; exit 2; }
	@$(PY) -m shared.cli run $(PATTERN) $(if $(LOCAL),--local) $(if $(PORT_OFFSET),--port-offset $(PORT_OFFSET))

test: $(STAMP) ## the whole suite, or one pattern's tests with PATTERN=
ifdef PATTERN
	@folder=$$($(PY) -m shared.cli resolve $(PATTERN) 2>&1) || { echo "$$folder"; exit 2; }; \
	  $(PY) -m pytest -n $(TEST_WORKERS) $$folder
else
	$(PY) -m pytest -n $(TEST_WORKERS)
endif

load: $(STAMP) ## Locust against the running PATTERN; pass/fail on its SLO (HOST=, PORT_OFFSET=, USERS=, DURATION=)
	@test -n "$(PATTERN)" || { echo "usage: make load PATTERN=web-single  (start it first: make run)"; exit 2; }
	@$(PY) -m shared.loadtest $(PATTERN) $(if $(HOST),--host $(HOST)) $(if $(PORT_OFFSET),--port-offset $(PORT_OFFSET)) $(if $(USERS),--users $(USERS)) $(if $(DURATION),--duration $(DURATION))

lint: $(STAMP) ## ruff, mypy on shared/, hadolint on every Dockerfile, every compose file validated
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/hadolint $$(git ls-files '*Dockerfile*')
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.compose-spec $$(git ls-files '*compose.yaml' docker-compose.yml)
	$(PY) -m pytest -q tests/test_layout.py

bench: $(STAMP) ## the benchmarks, side by side with their baselines (PATTERN= for one)
	@command -v wrk >/dev/null || { echo "installing wrk (load generator)"; apt-get update -qq && apt-get install -y -qq wrk; } \
	  || { echo "wrk is needed: apt-get install wrk (Debian/Ubuntu) or brew install wrk"; exit 1; }
	$(PY) -m benchmarks $(PATTERN)

clean: ## remove the virtual environment, trained models and reports
	rm -rf $(VENV) models reports .pytest_cache .ruff_cache .mypy_cache
