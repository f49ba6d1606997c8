# Two commands for a newcomer: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,dev,embedded]'
	touch $(STAMP)

# Starts the daemon on DATABASE_URL, or on an embedded PostgreSQL under .jsrt/ when unset.
run: $(STAMP)
	$(BIN)/jsrt dev

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check consumer tests bench
	$(BIN)/mypy consumer

bench: $(STAMP)
	$(BIN)/python bench/executor.py
	$(BIN)/python bench/consumer.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
