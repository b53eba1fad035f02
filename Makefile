# Two entry points, both self-contained on a machine with only Python 3.11 and pip:
#   make demo  -> create .venv, install, embed NAICS and print the fidelity table (+ PNG)
#   make test  -> create .venv, install with test extras, lint and run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch; a bare `torch` would pull a multi-GB CUDA build.
TORCH_PIN := torch==2.13.0
DEMO_ARGS ?=

.PHONY: demo test install install-test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q $(TORCH_PIN)
	$(BIN)/pip install -q -e .

install-test: $(BIN)/python
	$(BIN)/pip install -q $(TORCH_PIN)
	$(BIN)/pip install -q -e '.[test]'

demo: install
	$(BIN)/hyperloss embed naics --out runs/naics-2d --force $(DEMO_ARGS)

lint: install-test
	$(BIN)/ruff check hyperloss tests examples benchmarks
	$(BIN)/ruff format --check hyperloss tests examples benchmarks

test: lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info runs
