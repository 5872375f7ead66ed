# The project's commands. `make run` and `make test` are the README quick start.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install broker run test test-mongo mutants lint check bench clean constraints

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	@# uv installs the pinned set in a quarter of pip's time (23 against 85 s on 2 cores).
	$(PY) -m pip install -q -c constraints.txt uv
	$(PY) -m uv pip install -q --python $(PY) -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

broker:
	scripts/ensure-rabbitmq

run: install broker
	scripts/run-local

# The suite under coverage ([tool.coverage] in pyproject.toml; a child process only where its
# test asks); below the floor (fail_under) the run fails. TEST_PROCESSES pytest processes share
# the tests (every test has its own broker namespace); TEST_PROCESSES=0 runs them in pytest's.
TEST_PROCESSES ?= 2
test: install broker
	rm -f .coverage .coverage.*
	$(PY) -m coverage run -m pytest --numprocesses=$(TEST_PROCESSES) $(ARGS)
	@# A child SIGKILLed by a test leaves an empty data file: nothing to combine in it.
	find . -maxdepth 1 -name '.coverage.*' -empty -delete
	$(PY) -m coverage combine -q
	$(PY) scripts/coverage-by-package
	$(PY) -m coverage report --skip-covered --sort=cover

# The store contract suite against a real MongoDB from the compose file (a container engine
# and .env needed; docs/testing.md).
test-mongo: install broker
	scripts/test-mongo $(ARGS)

# Break each core guarantee on purpose and check that its tests notice (docs/testing.md).
mutants: install broker
	$(PY) -m tests.mutants

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

check: install
	$(VENV)/bin/sgw check

# `make bench ARGS=--quick` for a short run. wrk comes from Debian when missing (as root);
# without it the bench falls back to its slower httpx loader.
bench: install broker
	$(PY) -m uv pip install -q --python $(PY) -c constraints.txt -e '.[bench]'
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; } \
		|| echo "wrk is not installed: the bench uses its httpx loader" >&2
	$(PY) -m bench $(ARGS)

clean:
	rm -rf $(VENV) *.egg-info .mypy_cache .ruff_cache .pytest_cache servicegateway.db* .coverage .coverage.*

# constraints.txt again from the newest versions pyproject.toml's ranges allow, resolved in a
# fresh environment; its heading comment is kept.
constraints:
	rm -rf .constraints-venv
	python3 -m venv .constraints-venv
	.constraints-venv/bin/python -m pip install -q --upgrade pip
	.constraints-venv/bin/python -m pip install -q -e '.[dev]'
	{ sed -n '/^#/!q;p' constraints.txt; \
		.constraints-venv/bin/python -m pip freeze --exclude-editable; } > constraints.new
	mv constraints.new constraints.txt
	rm -rf .constraints-venv
