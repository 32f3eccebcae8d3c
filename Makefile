# Two commands on a fresh machine: `make demo` (install + every domain's quick pipeline) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
EXTRAS ?= sweep,slurm,export,test,pretrained,serve,text
STAMP := $(VENV)/.installed

.PHONY: install demo test test-all bench bench-full clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# A pinned torch first: an unpinned one would pull a multi-GB CUDA build onto CPU-only machines.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install "torch==$(TORCH_VERSION)"
	$(BIN)/pip install -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/sectorkit demo

test: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m "not slow" -q

test-all: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

bench: install
	$(BIN)/python -m benchmarks.run_all --quick

bench-full: install
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf outputs data_cache .pytest_cache
