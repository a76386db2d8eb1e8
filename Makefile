# Set-up and everyday commands. `make demo` and `make test` do all the set-up themselves.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The torch requirement installed first (CI pins the CPU build on disk: torch==2.13.0).
TORCH_REQUIREMENT ?= torch==2.13.0
DEMO_TRIALS ?= 20
PYTEST_ARGS ?=
# This machine's pip config lists local indexes that may not exist: hide those warnings only.
QUIET_PIP := { grep -v "is ignored: it is neither a file nor a directory" || true; }

.PHONY: install dev demo test lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH_REQUIREMENT)" 2>&1 | $(QUIET_PIP)
	$(BIN)/pip install -q -e . 2>&1 | $(QUIET_PIP)
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[dev]' 2>&1 | $(QUIET_PIP)
	touch $@

install: $(VENV)/.installed

dev: $(VENV)/.installed-dev

demo: install
	@echo "== a $(DEMO_TRIALS)-trial study of the cvfp trainer: about 20 s on 2 idle CPU cores (1.5 min with the install), more on a busy machine"
	@start=$$(date +%s); \
	$(BIN)/hpsearch run cvfp --trials $(DEMO_TRIALS); \
	$(BIN)/hpsearch studies; \
	echo "== done in $$(( $$(date +%s) - start )) s (already $(DEMO_TRIALS) trials? --more-trials N adds)"; \
	echo "Next, try:"; \
	echo "  $(BIN)/hpsearch best cvfp --top 3 --json          # the best configs, for a program"; \
	echo "  $(BIN)/hpsearch best cvfp --top 1 --export yaml > best.yaml && $(BIN)/hpsearch try --config best.yaml"; \
	echo "  $(BIN)/hpsearch dashboard                         # optuna-dashboard: http://127.0.0.1:8080/"; \
	echo "  $(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db   # MLflow: http://127.0.0.1:5000/"; \
	echo "  $(BIN)/hpsearch run examples/digits.yaml --trials 20 --no-mlflow   # your own trainer: README"

lint: dev
	$(BIN)/ruff check hpsearch tests bench
	$(BIN)/mypy

test: dev lint
	$(BIN)/python -m pytest -n 2 --dist loadfile -q $(PYTEST_ARGS)

bench: dev
	for script in bench/*.py; do echo "== $$script"; $(BIN)/python $$script; done

clean:
	rm -rf $(VENV) hpsearch.db* mlflow.db* mlruns mlartifacts .pytest_cache .mypy_cache .ruff_cache
