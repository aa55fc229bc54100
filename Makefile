# edgefleet.iotedge developer entry points. Everything runs from .venv/bin (no activated shell needed).
#   make setup        Debian packages, .venv, .collections link (fast when already done)
#   make lint         ruff, ruff format --check, ansible-lint (offline), antsibull-changelog lint, role arg specs
#   make ee           ansible-builder create on execution-environment.yml into build/ee; introspect the built collection
#   make sanity       ansible-test sanity on a copy under build/sanity/ansible_collections/edgefleet/iotedge
#   make galaxy       collection tarball in build/galaxy/: its Markdown links resolve, galaxy-importer logs no ERROR
#   make unit         pytest tests/unit tests/lab
#   make integration  pytest tests/integration
#   make molecule     molecule test --all for every scenario in extensions/molecule
#   make test         setup + lint + ee + sanity + galaxy + unit + integration + molecule (what .ci/run runs)
#   make demo         start a lab of HOSTS hosts (default 3) and run playbooks/provision_edge.yml on .lab/inventory
#   make bench        benchmarks/run.py
#   make lab-up       python -m lab up (HOSTS=3): emulators + podman edge hosts + .lab/inventory
#   make lab-status   python -m lab status
#   make lab-down     python -m lab down: remove every container, process and file of the lab
# Each step prints "==> [name] ..."; the first failing step stops make with "*** FAILED: step [name] ...".

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
# Targets share .venv and build/: never run them in parallel, and run `make test`'s parts in order.
.NOTPARALLEL:

VENV := .venv
BIN := $(VENV)/bin
STEP := scripts/step.sh
# Tools started by other tools (ansible-lint -> ansible-playbook, molecule -> ansible) come from .venv too.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: help setup lint ee sanity galaxy unit integration molecule test demo bench lab-up lab-status lab-down clean

HOSTS ?= 3

help:
	@sed -n 's/^#   make /  make /p' Makefile

setup:
	@$(STEP) setup scripts/setup.sh

lint: setup
	@$(STEP) lint:ruff-check $(BIN)/ruff check .
	@$(STEP) lint:ruff-format $(BIN)/ruff format --check .
	@$(STEP) lint:ansible-lint $(BIN)/ansible-lint --offline
	@$(STEP) lint:changelog $(BIN)/antsibull-changelog lint
	@$(STEP) lint:changelog-yaml $(BIN)/antsibull-changelog lint-changelog-yaml changelogs/changelog.yaml
	@$(STEP) lint:role-argument-specs $(BIN)/python scripts/check_role_argument_specs.py

ee: setup
	@$(STEP) ee $(BIN)/python scripts/check_ee.py

sanity: setup
	@$(STEP) sanity scripts/sanity.sh

galaxy: setup
	@$(STEP) galaxy scripts/galaxy_importer.sh

unit: setup
	@$(STEP) unit scripts/pytest.sh tests/unit tests/lab

# The lab tests wait on hosts and emulators most of the time: two workers, each taking whole files (a file's tests
# may share a fleet), keep both cores busy. INTEGRATION_WORKERS=0 runs them in this one process.
INTEGRATION_WORKERS ?= 2

integration: setup
	@$(STEP) integration env PYTEST_ARGS="$(if $(filter 0,$(INTEGRATION_WORKERS)),,-n $(INTEGRATION_WORKERS) --dist loadfile) --durations=15 $${PYTEST_ARGS:-}" scripts/pytest.sh tests/integration

molecule: setup
	@$(STEP) molecule scripts/molecule.sh

test: setup lint ee sanity galaxy unit integration molecule
	@echo "==> make test: all steps passed"

demo: setup
	@$(STEP) demo:lab-up $(BIN)/python -m lab up --hosts $(HOSTS)
	@$(STEP) demo:provision $(BIN)/ansible-playbook -i .lab/inventory playbooks/provision_edge.yml

bench: setup
	@$(STEP) bench $(BIN)/python benchmarks/run.py

lab-up: setup
	@$(STEP) lab-up $(BIN)/python -m lab up --hosts $(HOSTS)

lab-status: setup
	@$(BIN)/python -m lab status

lab-down: setup
	@$(STEP) lab-down $(BIN)/python -m lab down

clean:
	rm -rf build .collections .pytest_cache .ruff_cache
