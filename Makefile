# Two commands for a new user: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-pretrain test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch is pinned to the CPU build for the local webgen backend's test; an open range pulls CUDA wheels.
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[dev,webgen,hub,ray]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/crystalmix build manifests/demo.yaml --out build/demo
	$(BIN)/crystalmix validate build/demo

demo-pretrain: $(STAMP)
	$(BIN)/crystalmix pretrain build manifests/pretrain/demo.yaml --out build/pretrain-demo
	$(BIN)/crystalmix validate build/pretrain-demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check crystalmix sft_builder pretrain templates tests bench

bench: $(STAMP)
	# the peers each bench compares against (each bench still runs, with its plain ratio, when one is missing)
	$(BIN)/pip install --quiet -e ".[bench]"
	for b in bench/*.py; do $(BIN)/python $$b; done

clean:
	rm -rf build $(VENV)
