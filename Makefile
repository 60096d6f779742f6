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

# `make help` lists every target that has a `## what it does` comment on its rule line (all of them do)
help: ## list the targets
	@awk 'BEGIN {FS = ":[^#]*## "} /^[a-zA-Z0-9_-]+:[^=]*## / {printf "make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

venv: $(STAMP) ## create .venv and install the package with its pinned test dependencies

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip check
	@touch $@

install: venv ## same as venv

lint: venv ## ruff, mypy --strict and import-linter
	$(BIN)/ruff check .
	$(BIN)/mypy $(PACKAGES)
	$(BIN)/lint-imports

typecheck: venv ## mypy --strict alone
	$(BIN)/mypy $(PACKAGES)

imports: venv ## import-linter alone (the layers in .importlinter)
	$(BIN)/lint-imports

proto: venv ## regenerate the gRPC stubs from proto/
	$(PY) -m modelloop.contract.wire.protogen

proto-check: venv ## check the gRPC stubs match proto/
	$(PY) -m modelloop.contract.wire.protogen --check

postgres: ## install and start PostgreSQL for the tests when absent
	bash tools/ensure-postgres.sh

helm-bin: venv ## fetch the Helm 3 and Helm 4 binaries the chart tests use
	bash tools/fetch-helm.sh

test: venv postgres helm-bin lint ## lint, type-check and run the whole test suite (starts PostgreSQL)
	$(BIN)/pytest tests -m "not k8s" -p no:cacheprovider

test-unit: venv ## the hermetic unit tests only (seconds, no services)
	$(BIN)/pytest tests/unit -p no:cacheprovider

demo: venv ## run the whole loop on this machine and report it (KEEP=1 leaves it running)
	$(BIN)/modelloop demo $(if $(KEEP),--keep,)

up: venv ## start the local platform in .modelloop until Ctrl-C (README: "Run the loop yourself")
	$(BIN)/modelloop up

bench: venv h2load ## run the benchmarks and print ratios against their anchors
	$(PY) bench/run.py

.PHONY: h2load
h2load: ## install h2load (the HTTP/2 load generator of the serving benchmark) when absent
	bash tools/ensure-h2load.sh

clean: ## remove .venv, local state (.modelloop) and tool caches
	rm -rf $(VENV) .modelloop .mypy_cache .ruff_cache .pytest_cache .cache

docs-shots: venv ## run the demo to a retraining and screenshot its MLflow UI pages into docs/shots/ (installs chromium)
	command -v chromium >/dev/null 2>&1 || { if [ "$$(id -u)" = 0 ]; then apt-get update -qq \
	  && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; else sudo apt-get update -qq \
	  && sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; fi; }
	OMP_NUM_THREADS=1 $(PY) tools/docs_shots.py --out docs/shots
