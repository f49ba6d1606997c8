# Two commands for a newcomer: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The web console's front-end packages (htmx, CodeMirror) from the npm registry, copied into
# consumer/console/static/vendor/ (gitignored); pinned by the committed package-lock.json.
VENDOR := consumer/console/static/vendor/.built

.PHONY: run test lint bench bench-compare docker docker-base docker-pg docker-test clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,dev,embedded]'
	touch $(STAMP)

# Without npm the console still runs (no editor, no live updates) and says so; make says it too.
$(VENDOR): consumer/console/assets/package-lock.json | $(STAMP)
	@if command -v npm >/dev/null; then $(BIN)/python consumer/console/vendor.py && touch $(VENDOR); \
	else echo "make: npm not found: the web console runs without its code editor and live updates (install Node.js, then make again)"; fi

# Starts the daemon on DATABASE_URL, or on an embedded PostgreSQL under .jsrt/ when unset;
# HTTP endpoints on 127.0.0.1:8080, metrics and health on 127.0.0.1:9464. The demo tenant and
# its scripts are created on the embedded server only (`make run DEV_ARGS=--demo` for
# DATABASE_URL's database too).
DEV_ARGS ?=
run: $(STAMP) $(VENDOR)
	$(BIN)/jsrt dev --http 127.0.0.1:8080 $(DEV_ARGS)

test: $(STAMP) $(VENDOR)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check consumer tests bench setup.py
	$(BIN)/mypy consumer setup.py

bench: $(STAMP)
	$(BIN)/python bench/executor.py
	$(BIN)/python bench/consumer.py

# jsruntime beside Graphile Worker, pg-boss and Procrastinate, in one sitting (installs them)
bench-compare: $(STAMP)
	$(BIN)/python bench/compare.py $(COMPARE_ARGS)

# The image (Dockerfile). BASE_IMAGE is its base: python:3.11-slim, or, where Docker Hub cannot
# be reached, the Debian image `make docker-base` builds from Debian's packages.
IMAGE      ?= jsruntime:latest
BASE_IMAGE ?= python:3.11-slim
docker:
	docker build --build-arg BASE_IMAGE=$(BASE_IMAGE) -t $(IMAGE) .

# A Debian bookworm base with Python 3.11 from Debian's packages (mmdebstrap + docker import);
# EXTRA_CA_CERTS=FILE adds certificates the network needs (see .ci/docker-base).
DEBIAN_BASE ?= jsruntime-base:bookworm
docker-base:
	EXTRA_CA_CERTS=$(EXTRA_CA_CERTS) .ci/docker-base $(DEBIAN_BASE)

# PostgreSQL 15 for the test suite's Docker path when postgres:16-alpine cannot be pulled, on a
# Debian bookworm base (PG_BASE_IMAGE=$(DEBIAN_BASE) without Docker Hub):
#   JSRT_TEST_PG_IMAGE=$(PG_IMAGE) TESTCONTAINERS_RYUK_DISABLED=true make test
PG_IMAGE      ?= jsruntime-pg:15
PG_BASE_IMAGE ?= debian:bookworm-slim
docker-pg:
	docker build --build-arg BASE_IMAGE=$(PG_BASE_IMAGE) -t $(PG_IMAGE) .ci/postgres-image

# Builds the image and runs migrate up, the daemon and one event in it against the host's
# PostgreSQL (ADMIN_URL), checks the health check and the non-root user, then cleans up.
docker-test:
	BASE_IMAGE=$(BASE_IMAGE) IMAGE=$(IMAGE) .ci/docker-test

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache consumer/console/static/vendor \
		consumer/console/assets/node_modules
