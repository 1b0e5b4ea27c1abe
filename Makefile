# mltask-operator: developer entry points. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CLUSTER_DIR ?= .cluster
NODE_CLUSTER_DIR ?= .cluster-node
export PYTHONPATH := $(CURDIR)/operator:$(CURDIR)/tests

.PHONY: help venv tools test image image-push unit transfer integration e2e bench lint generate check-generated lock cluster-up cluster-down cluster-status demo demo-simulated clean images node-up node-down node-status node-test

help: ## List targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet $(if $(wildcard requirements.lock),--constraint requirements.lock) -e '.[test]'
	touch $@

venv: $(VENV)/.installed ## Create .venv with the project and test dependencies

tools: ## Build (or reuse) the test tools from pinned Go modules: the control plane, kubelet, helm, Argo, kwok, the S3 server, Argo CD's health engine, promtool
	tests/tools/build.sh

test: venv tools lint check-generated ## Lint, drift checks, then all tests: unit, transfer (real S3 server), integration (real API server), e2e (real Argo + kwok), node (real kubelet, root)
	$(PY) -m pytest --durations=25 tests/unit tests/transfer tests/integration tests/e2e tests/node

unit: venv ## Run the fast unit tests only
	$(PY) -m pytest tests/unit

transfer: venv tools ## Run the transfer program's tests only (real S3 server, hub and HTTPS stand-ins)
	$(PY) -m pytest tests/transfer

integration: venv tools ## Run the integration tests only
	$(PY) -m pytest tests/integration

generate: venv tools ## Regenerate crds/, the chart's CRDs and manifests/ from the models and chart
	$(PY) -m mltask_operator.crdgen --out crds --out charts/mltask-operator/crds
	$(PY) manifests/generate.py
	$(PY) manifests/argocd/gen_argocd_cm.py

check-generated: venv tools ## Fail if crds/, charts/ CRDs, manifests/ or requirements.lock drifted
	$(PY) -m mltask_operator.crdgen --check --out crds --out charts/mltask-operator/crds
	$(PY) manifests/generate.py --check
	$(PY) manifests/argocd/gen_argocd_cm.py --check
	$(PY) tests/tools/requirements_lock.py --check

lock: venv ## Pin the image's runtime dependencies (requirements.lock) to the venv's versions
	$(PY) tests/tools/requirements_lock.py

e2e: venv tools ## Run the end-to-end tests only (Argo's workflow-controller, kwok nodes)
	$(PY) -m pytest tests/e2e

bench: venv tools ## Scale figures beside their floors from the same run (about 35 min; BENCH_ARGS="--help" lists the flags)
	$(PY) -m bench $(BENCH_ARGS)

lint: venv ## Ruff, the import layers (import-linter contracts in pyproject.toml), mypy --strict
	$(VENV)/bin/ruff check operator tests manifests
	$(VENV)/bin/lint-imports pyproject.toml
	$(VENV)/bin/mypy

cluster-up: venv tools ## Start a local cluster (control plane, scheduler, Argo, kwok nodes) in .cluster/
	@$(PY) -m harness.controlplane up --dir $(CLUSTER_DIR)

cluster-down: venv ## Stop the local control plane
	@$(PY) -m harness.controlplane down --dir $(CLUSTER_DIR)

cluster-status: venv ## Show whether the local control plane runs
	@$(PY) -m harness.controlplane status --dir $(CLUSTER_DIR)

image: venv ## Build the operator image from the Dockerfile (buildah on a Debian base, no Docker; root) into an OCI archive; prints its path and size
	@$(PY) -m harness.images build mltask-operator

image-push: venv ## Push the operator image to your registry: make image-push IMAGE=registry.example.com/ml/mltask-operator (tag: the project version)
	@test -n "$(IMAGE)" || { echo "usage: make image-push IMAGE=registry.example.com/ml/mltask-operator" >&2; exit 2; }
	@$(PY) -m harness.images push mltask-operator --to $(IMAGE)

images: venv tools ## Build the real node's images into OCI archives in ~/.cache/mltask-operator/images (root; cached by their inputs)
	$(PY) -m harness.images build

node-up: venv tools ## Start a cluster with a REAL node (root: containerd, kubelet, kube-proxy, Argo; images imported) in .cluster-node/
	@$(PY) -m harness.node up --dir $(NODE_CLUSTER_DIR)

node-down: venv ## Stop the real node and restore the host (also after a killed run)
	@$(PY) -m harness.node down

node-status: venv ## Show whether the real node's processes run
	@$(PY) -m harness.node status

node-test: venv tools images ## Run the real-node smoke tests in tests/node (root; starts and stops its own node)
	$(PY) -m pytest tests/node

demo: venv tools ## The example pipeline run for real: a real node (root), Argo, an S3 server; states, logs, stored outputs and metrics shown (first run builds images)
	@$(PY) -m harness.demo $(if $(KEEP),--keep)

demo-simulated: venv tools ## The same story without a real node: kwok nodes and an executor stand-in (no root needed)
	@$(PY) -m harness.demo_simulated $(if $(KEEP),--keep)

clean: cluster-down ## Remove the venv and local cluster data (keeps the Go binary cache)
	rm -rf $(VENV) $(CLUSTER_DIR)
