# All set-up happens here: `make demo` and `make test` work on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch==2.13.0 is the CPU wheel on local disk; an unpinned torch would pull a multi-GB CUDA build.
# The install also compiles the native kernels (setup.py): a change to the build or to a C source
# changes the stamp, so the next `make test` reinstalls and rebuilds them.
BUILD_INPUTS := pyproject.toml setup.py src/logitlab/_native/_build.py $(wildcard csrc/*.c csrc/*.h)
STAMP := $(VENV)/.installed-$(shell cat $(BUILD_INPUTS) | cksum | cut -d' ' -f1)

.PHONY: install demo test lint typecheck bench docs clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): $(BIN)/python $(BUILD_INPUTS)
	$(BIN)/python -m pip install -q -e ".[all,test]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/logitlab report --out demo-report

lint: install
	$(BIN)/ruff check src tests benchmarks scripts examples
	$(BIN)/ruff format --check src tests benchmarks scripts examples
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy src

test: install lint typecheck
	$(BIN)/python -m pytest -n 2 -p no:cacheprovider -o addopts="--doctest-modules"

# Every timing script runs on the harness of logitlab.app.bench. BENCH_ARGS="--before ../old" adds
# the logitlab variants of another checkout to the same interleaved rounds; "--quick": tiny shapes.
BENCH_ARGS ?=
bench: install
	$(BIN)/python benchmarks/accuracy.py
	$(BIN)/python benchmarks/speed_core.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/bench_linear_ce.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/bench_cross_entropy.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/bench_diagnose.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/bench_evaluator.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) demo-report .pytest_cache .mypy_cache .ruff_cache build dist
	rm -f src/logitlab/_native/liblogitlab_*
