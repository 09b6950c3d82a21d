# Two commands: `make run` and `make test`. Everything lives in .venv inside the repo.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 7860

.PHONY: run test bench install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.torch: | $(BIN)/python
	bash scripts/install-torch.sh $(BIN)/pip
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

## Start the web app at http://$(HOST):$(PORT) (fetches the default model on first use).
run: $(VENV)/.installed
	$(BIN)/chatcore pull
	$(BIN)/python app.py --host $(HOST) --port $(PORT)

## Run the whole test suite, the integration and browser tests included.
test: $(VENV)/.installed
	$(BIN)/python -m pytest

$(VENV)/.bench: $(VENV)/.installed
	CMAKE_ARGS="$$(bash scripts/llama-cpp-cmake-args.sh)" $(BIN)/pip install -e ".[bench]"
	touch $@

## Benchmarks: engines, library, evaluation, data (bench/results/; llama.cpp build takes ~13 min on 2 cores the first time).
bench: $(VENV)/.bench
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build *.egg-info
