# Two entry points for a fresh machine: `make demo` (the main job) and `make test` (the suite).
# `make bench` runs the Omniglot reproduction (benchmarks/reproduce.py: every image method, 30 CPU-minutes each,
# BUDGET=... to change); the other benchmarks run one script at a time (`python benchmarks/NAME.py --help`).
# Both create/refresh the virtualenv first. torch is pinned through constraints.txt so that
# set-up on a CPU-only machine never pulls a CUDA build.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The shared data beside a checkout (this machine and CI); override with FEWSHOT_DATA=...
FEWSHOT_DATA ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),)
export FEWSHOT_DATA

.PHONY: demo test venv bench clean
BUDGET ?= 30

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test,text,vision,serve,multilingual]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/fewshot demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

bench: $(STAMP)
	$(BIN)/python benchmarks/reproduce.py --budget-cpu-min $(BUDGET)

clean:
	rm -rf $(VENV) runs .pytest_cache
