# make test: create .venv, install torch + tools, lint, build the extension (CUDA too when nvcc is found), run tests.
# make lint: ruff (Python) and clang-format (C++/CUDA) at the code's 120 columns; `make format` applies them.
# make generate: rewrites csrc/generated/ (C++ from safe_ops/_declarations.py; the build does it too, and
#   tests/test_generated.py fails when a committed file is stale).
# make bench: the default benchmark subset (BENCH_ARGS=--all for everything).
# make matrix: the version matrix (.ci/matrix.py): build and test on each other torch/Python pair claimed
#   (LEGS="device cpu py310 newest" by default; each leg its own venv and build under build/matrix/<leg>).
# make fuzz: tests/test_fuzz.py at FUZZ_EXAMPLES=2000, 20,000 cases against torch (make test runs 2,000 of them).
# make wheel: build/dist/safe_ops-*.whl (pip wheel, no build isolation: against the installed torch; the same build
#   as make build's, so it recompiles nothing current). make wheel-test: installs it into a fresh venv
#   (build/wheel-venv) that sees this venv's torch through a .pth file (no second 5.5 GB torch) and runs
#   tests/wheel_smoke.py there, outside the checkout. make test runs it.
# Everything is incremental: re-running only redoes what changed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MAX_JOBS ?= 2
# nvcc and the CUDA toolkit live here on these machines; setup.py also falls back to it.
export CUDA_HOME ?= $(if $(wildcard /usr/local/cuda/bin/nvcc),/usr/local/cuda,)
export MAX_JOBS
BENCH_ARGS ?=
LEGS ?=

.PHONY: all venv lint format generate build test matrix fuzz bench clean wheel wheel-test

CXX_SOURCES = $(shell git ls-files 'csrc/*.h' 'csrc/*.cpp' 'csrc/*.cu' 'csrc/*.cuh' 'examples/*.cpp' 2>/dev/null)

all: test

$(VENV)/.installed: requirements-dev.txt requirements-test.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade -q -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/clang-format --dry-run --Werror $(CXX_SOURCES)

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/clang-format -i $(CXX_SOURCES)

generate:
	$(PYTHON) csrc/codegen/generate.py

build: venv
	$(PY) setup.py -q build_ext --inplace

# SAFE_OPS_REQUIRE_CLIENTS: torchvision and timm are installed here, so their tests must run (tests/clients.py).
test: lint build
	SAFE_OPS_REQUIRE_CLIENTS=1 $(PY) -m pytest -q tests
	$(MAKE) wheel-test

matrix:
	$(PYTHON) .ci/matrix.py $(LEGS)

fuzz: build
	FUZZ_EXAMPLES=2000 $(PY) -m pytest -q tests/test_fuzz.py

bench: build
	$(PY) benchmarks/run.py $(BENCH_ARGS)

wheel: build
	rm -f build/dist/safe_ops-*.whl
	$(PY) -m pip wheel -q --no-build-isolation --no-deps -w build/dist .
	ls -l build/dist/safe_ops-*.whl

WHEEL_VENV := build/wheel-venv
wheel-test: wheel
	rm -rf $(WHEEL_VENV)
	$(PY) -m venv $(WHEEL_VENV)
	$(PY) -c "import sysconfig; print(sysconfig.get_path('purelib'))" > \
	  $$($(WHEEL_VENV)/bin/python -c "import sysconfig; print(sysconfig.get_path('purelib'))")/torch-venv.pth
	$(WHEEL_VENV)/bin/python -m pip install -q --no-deps --no-index build/dist/safe_ops-*.whl
	cd $(WHEEL_VENV) && bin/python $(CURDIR)/tests/wheel_smoke.py

clean:
	rm -rf build safe_ops/_C*.so safe_ops/libsafe_ops.so
