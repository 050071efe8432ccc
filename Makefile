# One entry point for development tasks. `make test` and `make demo` set up everything they need.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help deps venv test test-unit test-component test-cluster test-e2e lint typecheck crds argocd demo bench clean \
	cluster-build argocd-build traefik-build cluster-up cluster-down

help:
	@echo "make test       system packages + virtualenv + lint + every test tier (unit, component, cluster, e2e)"
	@echo "make demo       the demo rollout on a local cluster with real pods (make demo-down removes it)"
	@echo "make e2e        end-to-end scenarios with real pods (docs/e2e.md); make images builds the images"
	@echo "make lint       ruff + mypy --strict (product code, tests, benchmarks, e2e) + import contracts"
	@echo "make crds       regenerate crds/ and the chart's CRDs from the pydantic models"
	@echo "make argocd     regenerate the Argo CD health check and actions from argocd/src (docs/argocd.md)"
	@echo "make bench      benchmarks (results in bench/results/)"
	@echo "make cluster-up / cluster-down   local control plane from the pinned Kubernetes (e2e/cluster/)"

deps:
	@bash scripts/system-deps

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# The e2e tier runs last, on a fresh local cluster with a node that is purged afterwards (docs/testing.md).
# --tb=short: a failure prints its failing line and E lines, not the whole test (CI keeps only part of the log).
test: deps venv lint cluster-build argocd-build traefik-build
	$(BIN)/pytest --tb=short tests/unit tests/component tests/cluster
	@MLROLLOUT_STATE=$(E2E_TEST_STATE) bash e2e/tests/run --local --fresh

test-unit: venv argocd-build
	$(BIN)/pytest tests/unit

test-component: deps venv
	$(BIN)/pytest tests/component

test-cluster: deps venv cluster-build argocd-build
	$(BIN)/pytest tests/cluster

test-e2e: deps venv cluster-build traefik-build
	@MLROLLOUT_STATE=$(E2E_TEST_STATE) bash e2e/tests/run --local --fresh

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy operator/mlrollout inference/mlrollout_serving
	$(BIN)/mypy tests
	MYPYPATH=bench $(BIN)/mypy bench
	MYPYPATH=e2e/demo:e2e/tests $(BIN)/mypy --strict --explicit-package-bases e2e/tests e2e/demo e2e/node
	$(BIN)/lint-imports

crds: venv
	$(BIN)/python -m mlrollout.api.crdgen

argocd: venv
	$(BIN)/python -m mlrollout.argocdgen

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

# Pinned Kubernetes control plane for the cluster tier (docs/testing.md). The build is cached outside
# the repository, so only the first run compiles.
cluster-build:
	@bash e2e/cluster/build

# Argo CD's own Lua evaluator for the Argo CD tests (e2e/argocd, docs/argocd.md), cached the same way.
# The tests build it themselves when it is missing; this step only does it up front.
argocd-build:
	@bash e2e/argocd/build >/dev/null

# Traefik, the Gateway API implementation of the e2e Gateway API scenario (e2e/traefik, docs/traffic.md),
# built from its pinned Go module into the cache once (about 18 min cold on 2 cores), then reused.
# The scenario builds it itself when it is missing; this step only does it up front.
traefik-build:
	@bash e2e/traefik/build >/dev/null

cluster-up: cluster-build
	@bash e2e/cluster/up

cluster-down:
	@bash e2e/cluster/down

.PHONY: bench-gateway
bench: bench-gateway

bench-gateway: deps venv
	$(BIN)/python bench/gateway_bench.py --profile

# Decision quality of the analysis judge vs Flagger- and Kayenta-style judges (docs/analysis.md).
.PHONY: bench-decisions
bench: bench-decisions

bench-decisions: venv
	$(BIN)/python bench/decision_quality.py $(BENCH_DECISIONS_ARGS)
	$(BIN)/python bench/rollout_power.py
	$(BIN)/python bench/margin_power.py
	$(BIN)/python bench/split_power.py
	$(BIN)/python bench/forecast_check.py

# Model server vs KServe's Python ModelServer vs raw onnxruntime (docs/serving.md). KServe goes into its
# own .venv-bench: it pins older protobuf, kubernetes and python-dateutil than the dev environment.
BENCH_VENV := .venv-bench
.PHONY: bench-serve
bench: bench-serve

$(BENCH_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install -q --upgrade pip
	$(BENCH_VENV)/bin/pip install -q -e '.[bench]'
	touch $@

bench-serve: deps venv $(BENCH_VENV)/.installed
	$(BIN)/python bench/serve_bench.py $(BENCH_SERVE_ARGS)

# Real pods (docs/e2e.md): a local cluster with one node (containerd, kubelet, kube-proxy, CoreDNS) or
# kind where Docker exists, and images built without Docker. `make test` runs the scenarios as its last
# tier in its own state directory (one node per machine: it refuses to start beside a running demo).
E2E_STATE ?= /tmp/mlrollout-e2e
E2E_TEST_STATE ?= /tmp/mlrollout-e2e-test
.PHONY: images e2e demo demo-down
images: venv
	@bash e2e/node/deps
	@MLROLLOUT_STATE=$(E2E_STATE) bash images/build

e2e: deps venv cluster-build traefik-build
	@MLROLLOUT_STATE=$(E2E_STATE) bash e2e/tests/run

demo: deps venv
	@MLROLLOUT_STATE=$(E2E_STATE) bash e2e/demo/demo

demo-down:
	@MLROLLOUT_STATE=$(E2E_STATE) bash e2e/demo/down
