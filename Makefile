# Two commands for a fresh machine (Python 3.11, no conda needed):
#   make demo   create .venv if missing, run the whole pipeline on the embedded demo cohorts
#   make test   create .venv if missing, run lint, format checks and the whole test suite
PYTHON ?= python3
VENV ?= .venv
CORES ?= 2
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Offline by default: weights and data never come from a hub at run time.
export HF_HUB_OFFLINE := 1
export MPLBACKEND := Agg

.PHONY: demo test lint format clean-demo

$(STAMP): requirements.txt requirements-dev.txt requirements-slurm.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -r requirements-dev.txt
	touch $@

# One thread per feature job: two jobs of 16 slides each run side by side on a 2-core machine,
# which measured faster than one two-thread job at a time (bench/README.md).
demo: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --set-threads extract_features=1

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check .

test: lint
	$(BIN)/python -m pytest

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
	$(BIN)/snakefmt .

clean-demo:
	rm -rf resources/demo results/demo_tcga results/demo_liver logs benchmarks
