# Sluice — `make help` lists every target.
.DEFAULT_GOAL := help
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help
help: ## List every target with what it does
	@awk 'BEGIN {FS = ":.*## "; printf "Usage: make \033[36m<target>\033[0m\n\n"} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@echo ">> creating $(VENV) and installing sluice-backpressure[dev] (first run takes a few minutes)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet --progress-bar off -e '.[dev]'
	@touch $(STAMP)

.PHONY: install
install: $(STAMP) ## Create .venv and install the project with every extra (-e .[dev])

.PHONY: k8s
k8s: ## Build etcd, kube-apiserver, kube-controller-manager, kubectl, helm (pinned in hack/k8s; cached)
	@bash hack/k8s/build.sh

CLUSTER_DIR ?= .cluster

.PHONY: cluster
cluster: $(STAMP) k8s ## Start a real control plane with no nodes on loopback (etcd, apiserver, controllers)
	@$(BIN)/python -m tests.support.control_plane up --dir $(CLUSTER_DIR)

.PHONY: cluster-down
cluster-down: $(STAMP) ## Stop the control plane `make cluster` started
	@$(BIN)/python -m tests.support.control_plane down --dir $(CLUSTER_DIR)

.PHONY: test
test: $(STAMP) k8s ## Run unit and integration tests (real kube-apiserver, Prometheus, librdkafka mock cluster)
	@$(BIN)/python -m pytest -q -ra $(PYTEST_ARGS)

.PHONY: unit
unit: $(STAMP) ## Run only the fast unit tests
	@$(BIN)/python -m pytest -q tests/unit $(PYTEST_ARGS)

.PHONY: lint
lint: $(STAMP) ## ruff, mypy --strict over both packages, and the import-linter layering contracts
	@$(BIN)/ruff check operator sdk tests bench
	@$(BIN)/mypy --strict operator/sluice_operator sdk/sluice
	@PYTHONPATH=operator:sdk $(BIN)/lint-imports --no-cache

.PHONY: crds
crds: $(STAMP) ## Regenerate crds/, the chart's CRDs and the decision JSON Schemas from the models
	@$(BIN)/sluice crds --out crds/
	@if [ -d charts/sluice/crds ]; then cp crds/*.yaml charts/sluice/crds/; fi
	@$(BIN)/python -c 'from sluice.decision import write_schemas; [print(p) for p in write_schemas()]'

.PHONY: bench
bench: $(STAMP) ## Run the benchmarks; writes bench/RESULTS.md and bench/results.json
	@$(BIN)/python bench/run_all.py

.PHONY: demo
demo: $(STAMP) ## Closed-loop demo on this machine: embedded Kafka, producers, operator in local mode
	@$(BIN)/sluice demo

.PHONY: e2e
e2e: $(STAMP) ## Real-cluster tests on kind (needs docker, kind, kubectl, helm)
	@$(BIN)/python -m pytest -q -ra -m e2e tests/e2e

.PHONY: image
image: ## Build the operator container image
	docker build -t sluice-operator:$$($(PYTHON) -c 'import tomllib;print(tomllib.load(open("pyproject.toml","rb"))["project"]["version"])') .

.PHONY: clean
clean: ## Remove the venv, caches and reports
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache demo-report build *.egg-info
