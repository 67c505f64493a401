# The project's commands. The two a newcomer needs: `make run PATTERN=web-single`, `make test`.
# `make help` lists the rest.

# The supported interpreters found on this machine, newest first: each version's pythonX.Y on the
# PATH if it runs, else pyenv's build of it (pyenv's shims answer only for the active version).
# PYTHON= picks another; an existing VENV keeps the interpreter it was made with.
SUPPORTED_PYTHONS := 3.13 3.12 3.11
FOUND_PYTHONS := $(shell for v in $(SUPPORTED_PYTHONS); do \
  for p in python$$v $${PYENV_ROOT:-$$HOME/.pyenv}/versions/$$v.*/bin/python$$v; do \
    if $$p -c 'import sys; sys.exit(sys.version_info[:2] != tuple(map(int, "'$$v'".split("."))))' >/dev/null 2>&1; \
    then echo $$p; break; fi; done; done)
PYTHON ?= $(firstword $(FOUND_PYTHONS))
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TEST_WORKERS ?= 4

.DEFAULT_GOAL := help
.PHONY: help setup requirements pythons list run test load lint bench clean

help: ## this list
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

# requirements/dev.txt is every group of pyproject.toml compiled with constraints.txt, the same
# source as each image's requirements/<role>.txt; the project itself goes in editable, alone.
$(STAMP): pyproject.toml requirements/dev.txt
	@test -x $(PY) || { \
	  $(if $(PYTHON),,echo "Python 3.11, 3.12 or 3.13 is needed: install one (or run make PYTHON=/path/to/python3.13)"; exit 1;) \
	  $(PYTHON) -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] < (3, 14))' || { \
	    echo "$(PYTHON) is not Python 3.11, 3.12 or 3.13"; exit 1; }; \
	  echo "creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install --quiet --upgrade pip==25.3
	$(PY) -m pip install --quiet --no-deps -r requirements/dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m shared.training ensure
	@touch $@

setup: $(STAMP) ## create .venv (VENV=) with the pinned dependencies and train the bundled models

requirements: $(STAMP) ## compile requirements/*.txt from pyproject.toml's groups and constraints.txt
	$(PY) requirements/compile.py

pythons: ## the supported interpreters found here, newest first (the default PYTHON is the first)
	@printf '%s\n' $(FOUND_PYTHONS)

list: $(STAMP) ## every catalogue entry: category, folder, status, summary
	@$(PY) -m shared.cli list

run: $(STAMP) ## start PATTERN in the foreground: Docker if an engine answers, else local mode (LOCAL=1 forces it, PORT_OFFSET=100 moves its ports)
	@test -n "$(PATTERN)" || { echo "usage: make run PATTERN=web-single  (make list shows them all)"; exit 2; }
	@$(PY) -m shared.cli run $(PATTERN) $(if $(LOCAL),--local) $(if $(PORT_OFFSET),--port-offset $(PORT_OFFSET))

test: $(STAMP) ## the whole suite, or one pattern's tests with PATTERN= (pytest's own options in PYTEST_ARGS=)
ifdef PATTERN
	@folder=$$($(PY) -m shared.cli resolve $(PATTERN) 2>&1) || { echo "$$folder"; exit 2; }; \
	  $(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS) $$folder
else
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup --durations=25 $(PYTEST_ARGS)
endif

load: $(STAMP) ## Locust against the running PATTERN; pass/fail on its SLO (HOST=, PORT_OFFSET=, USERS=, DURATION=; STEPS=4,8,16 a step load and its chart)
	@test -n "$(PATTERN)" || { echo "usage: make load PATTERN=web-single  (start it first: make run)"; exit 2; }
	@$(PY) -m shared.loadtest $(PATTERN) $(if $(HOST),--host $(HOST)) $(if $(PORT_OFFSET),--port-offset $(PORT_OFFSET)) $(if $(USERS),--users $(USERS)) $(if $(DURATION),--duration $(DURATION)) $(if $(STEPS),--steps $(STEPS))

lint: $(STAMP) ## ruff, mypy strict on all the code, hadolint on every Dockerfile, every compose file validated
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
