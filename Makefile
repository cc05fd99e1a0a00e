# visual-search: every target installs what it needs into .venv on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROTO := proto/visualsearch/v1/search.proto
STUBS := visualsearch/v1/search_pb2.py
NODE_DIR := clients/node
NODE_STAMP := $(NODE_DIR)/node_modules/.package-lock.json
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install demo test lint typecheck check bench bench-quick train eval eval-quick soak clean

CHROMEDRIVER := /usr/bin/chromedriver

install: $(STAMP) $(FMNIST) $(STUBS) $(NODE_STAMP) $(CHROMEDRIVER)

# torch first and pinned: the CPU wheel lies on local disk, while an unpinned `torch` from an index would
# pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH"; exit 1; }
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	# compat mode puts the repository root on sys.path, so the generated stubs import like the rest
	$(BIN)/pip install -q -e '.[dev]' --config-settings editable_mode=compat
	$(BIN)/pip install -q --no-deps $$($(BIN)/python -c "import tomllib;print(' '.join(tomllib.load(open('pyproject.toml','rb'))['tool']['visual-search']['no-deps-dependencies']))")
	touch $(STAMP)

# gRPC stubs (+ mypy stubs) are generated from the contract by the build, never edited by hand.
$(STUBS): $(PROTO) $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -Iproto --plugin=protoc-gen-mypy=$(BIN)/protoc-gen-mypy \
	  --plugin=protoc-gen-mypy_grpc=$(BIN)/protoc-gen-mypy_grpc --python_out=. --grpc_python_out=. \
	  --mypy_out=. --mypy_grpc_out=. $(PROTO)
	touch visualsearch/__init__.py visualsearch/v1/__init__.py

# buf (proto lint) and the Node client's gRPC libraries; npm ci installs exactly package-lock.json
$(NODE_STAMP): $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	@command -v npm >/dev/null || { echo "need Node.js >= 18 and npm on PATH"; exit 1; }
	cd $(NODE_DIR) && npm ci --no-audit --no-fund
	touch $@

$(FMNIST):
	$(SUDO) apt-get install -y -q dataset-fashion-mnist || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q dataset-fashion-mnist; }

# Debian's chromium and its driver, for the web page's browser tests (selenium drives the system browser; nothing
# is downloaded at test time)
$(CHROMEDRIVER):
	$(SUDO) apt-get install -y -q chromium chromium-driver || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium chromium-driver; }

demo: install
	$(BIN)/vsearch demo

test: install
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(NODE_DIR)/node_modules/.bin/buf lint proto

# mypy over the gateway and the clients, against the generated stubs' .pyi files ([tool.mypy] in pyproject.toml)
typecheck: install
	$(BIN)/mypy

# What CI runs: lint, types, then the whole suite.
check: lint typecheck test

# Every benchmark in full, then BENCHMARKS.md from benchmarks/results/*.json (one: `python -m benchmarks.run --only NAME`).
bench: install
	$(BIN)/python -m benchmarks.run

# Bounded smoke runs: results and report in build/bench-quick/, never the committed figures.
bench-quick: install
	$(BIN)/python -m benchmarks.run --quick

# Longer fault, fuzz and soak runs than the test suite's (20x the fuzz cases, 30 s of load around each fault,
# a 5-minute soak).
soak: install
	VSEARCH_FUZZ_SCALE=20 VSEARCH_FAULT_LOAD_S=30 VSEARCH_SOAK_S=300 $(BIN)/pytest tests/reliability -q -s

eval: install
	$(BIN)/vsearch eval

eval-quick: install
	$(BIN)/vsearch eval --quick --out reports/comparison-quick

train: install
	$(BIN)/vsearch train dino --preset fmnist-femto-p7
	$(BIN)/vsearch train supervised --preset fmnist-femto-p7

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache visualsearch $(NODE_DIR)/node_modules
