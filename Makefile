# Two entry points, both self-contained on a machine with only Python 3.11 and pip:
#   make demo  -> create .venv, install, embed NAICS and print the fidelity table (+ PNG)
#   make test  -> create .venv, install with test extras, lint, run the tests and the doctests
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The pin fixes torch's version, not its build: pip takes the 2.13.0 wheel its configured
# indexes offer. On Linux, PyPI's is the multi-GB CUDA build; for the CPU build, point pip at
# PyTorch's CPU index:  make test TORCH_INDEX=https://download.pytorch.org/whl/cpu
# Where pip is configured to find a CPU wheel already (a local wheel directory), leave it empty.
# The later `pip install -e .` keeps the torch installed here (it satisfies torch>=2.1).
TORCH_PIN := torch==2.13.0
TORCH_INDEX ?=
TORCH_INSTALL = $(TORCH_PIN) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
DEMO_ARGS ?=

.PHONY: demo test install install-test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q $(TORCH_INSTALL)
	$(BIN)/pip install -q -e .

install-test: $(BIN)/python
	$(BIN)/pip install -q $(TORCH_INSTALL)
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
