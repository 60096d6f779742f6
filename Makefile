# One command per action. CI calls `make test` (see .ci/run).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PACKAGES := modelloop
export OMP_NUM_THREADS := 1
export MODELLOOP_TEST_POSTGRES_URL ?= postgresql+psycopg2://modelloop:modelloop-test@127.0.0.1:5432/postgres

.PHONY: help venv install lint typecheck imports proto proto-check postgres helm-bin test test-unit demo up bench clean

help:
	@echo "make demo   - run the whole loop on this machine (embedded defaults)"
	@echo "make test   - lint, type-check and run the whole test suite (starts PostgreSQL)"
	@echo "make lint   - ruff, mypy --strict, import-linter"
	@echo "make proto  - regenerate the gRPC stubs from proto/"
	@echo "make bench  - run the benchmarks and print ratios against their anchors"

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip check
	@touch $@

install: venv

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy $(PACKAGES)
	$(BIN)/lint-imports

proto: venv
	$(PY) -m modelloop.contract.wire.protogen

proto-check: venv
	$(PY) -m modelloop.contract.wire.protogen --check

postgres:
	bash tools/ensure-postgres.sh

helm-bin: venv
	bash tools/fetch-helm.sh

test: venv postgres helm-bin lint
	$(BIN)/pytest tests -m "not k8s" -p no:cacheprovider

test-unit: venv
	$(BIN)/pytest tests/unit -p no:cacheprovider

demo: venv
	$(BIN)/modelloop demo $(if $(KEEP),--keep,)

up: venv
	$(BIN)/modelloop up

bench: venv h2load
	$(PY) bench/run.py

.PHONY: h2load
h2load:
	bash tools/ensure-h2load.sh

clean:
	rm -rf $(VENV) .modelloop .mypy_cache .ruff_cache .pytest_cache .cache
