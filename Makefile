# Two commands for a newcomer: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench docker clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,dev,embedded]'
	touch $(STAMP)

# Starts the daemon on DATABASE_URL, or on an embedded PostgreSQL under .jsrt/ when unset;
# HTTP endpoints on 127.0.0.1:8080, metrics and health on 127.0.0.1:9464. The demo tenant and
# its scripts are created on the embedded server only (`make run DEV_ARGS=--demo` for
# DATABASE_URL's database too).
DEV_ARGS ?=
run: $(STAMP)
	$(BIN)/jsrt dev --http 127.0.0.1:8080 $(DEV_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check consumer tests bench
	$(BIN)/mypy consumer

bench: $(STAMP)
	$(BIN)/python bench/executor.py
	$(BIN)/python bench/consumer.py

IMAGE ?= jsruntime:latest
docker:
	docker build -t $(IMAGE) .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
