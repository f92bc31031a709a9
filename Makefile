# make test: create .venv, install torch + tools, build the extension (CUDA too when nvcc is found), run tests.
# make bench: the default benchmark subset (BENCH_ARGS=--all for everything).
# Everything is incremental: re-running only redoes what changed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MAX_JOBS ?= 2
# nvcc and the CUDA toolkit live here on these machines; setup.py also falls back to it.
export CUDA_HOME ?= $(if $(wildcard /usr/local/cuda/bin/nvcc),/usr/local/cuda,)
export MAX_JOBS
BENCH_ARGS ?=

.PHONY: all venv build test bench clean

all: test

$(VENV)/.installed: requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade -q -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

build: venv
	$(PY) setup.py -q build_ext --inplace

test: build
	$(PY) -m pytest -q tests

bench: build
	$(PY) benchmarks/run.py $(BENCH_ARGS)

clean:
	rm -rf build safe_ops/_C*.so
