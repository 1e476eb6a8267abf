# jobflow: the first two targets are the contract with users (see README.md).
#   make up    run the whole pipeline on this machine (installs what is missing)
#   make test  the whole test suite (starts the local stack when it is not up)

SHELL := /bin/bash
.DEFAULT_GOAL := help

UV_VERSION := 0.13.9
TOOLS := .local/tools
UV := $(TOOLS)/bin/uv
VENV := .venv
PYTHON := $(VENV)/bin/python
RUN := $(UV) run --frozen

.PHONY: cluster-up cluster-down cluster-status images cluster-deploy test-cluster help loadtest-env checkov-env quix-env go-receiver up down status logs clean test test-unit test-stack test-chaos chaos chaos-brokers bench security-check observability-check dashboards test-operator chart-check kube-tools strimzi-crds lint format typecheck docs \
	minikube-up deploy port-forward smoke loadtest undeploy

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | column -t -s $$'\t'

$(UV):
	@echo "==> uv: installing $(UV_VERSION) into $(TOOLS)"
	@python3 -m venv $(TOOLS) 2>/dev/null || { \
		echo "==> python3-venv missing: installing (apt-get)"; \
		$$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get install -y -qq python3-venv >/dev/null; \
		python3 -m venv $(TOOLS); }
	@$(TOOLS)/bin/pip install -q --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	@echo "==> python dependencies: uv sync (uv.lock)"
	@$(UV) sync --frozen --quiet
	@touch $@

# yandex-tank has an environment of its own: it needs pandas < 2, the dev group's chdb >= 2.1.
LOADTEST_VENV := .venv-loadtest
$(LOADTEST_VENV)/.synced: $(UV) pyproject.toml uv.lock
	@echo "==> yandex-tank environment: uv sync --group loadtest into $(LOADTEST_VENV)"
	@UV_PROJECT_ENVIRONMENT=$(LOADTEST_VENV) $(UV) sync --frozen --quiet --no-default-groups --group loadtest
	@touch $@

loadtest-env: $(LOADTEST_VENV)/.synced ## yandex-tank 2.0.11 in .venv-loadtest (make test builds it)

# checkov has an environment of its own too: see tools/checkov/pyproject.toml.
CHECKOV_VENV := .venv-checkov
$(CHECKOV_VENV)/.synced: $(UV) pyproject.toml uv.lock tools/checkov/pyproject.toml
	@echo "==> checkov environment: uv sync --package jobflow-checkov into $(CHECKOV_VENV)"
	@UV_PROJECT_ENVIRONMENT=$(CHECKOV_VENV) $(UV) sync --frozen --quiet --package jobflow-checkov
	@touch $@

checkov-env: $(CHECKOV_VENV)/.synced ## checkov 3.3.30 in .venv-checkov (make test builds it)

# Quix Streams, the peer bench/quix.py measures the processor beside: see tools/quix/pyproject.toml.
QUIX_VENV := .venv-quix
$(QUIX_VENV)/.synced: $(UV) pyproject.toml uv.lock tools/quix/pyproject.toml
	@echo "==> Quix Streams environment: uv sync --package jobflow-quix into $(QUIX_VENV)"
	@UV_PROJECT_ENVIRONMENT=$(QUIX_VENV) $(UV) sync --frozen --quiet --package jobflow-quix
	@touch $@

quix-env: $(QUIX_VENV)/.synced ## quixstreams 3.28.1 in .venv-quix (for python -m bench.quix)

# The seed's receiver in Go, the ingest benchmark's third target (bench/go_receiver). make's own
# timestamps decide when to build it again; go.sum pins its modules, and as in tools/kube/build.sh
# the toolchain is the one installed and go.mod is never rewritten.
GO ?= $(or $(shell command -v go),/usr/local/go/bin/go)
GO_RECEIVER := .local/bench/go-receiver
$(GO_RECEIVER): bench/go_receiver/go.mod bench/go_receiver/go.sum $(wildcard bench/go_receiver/*.go)
	@echo "==> go-receiver: go build (bench/go_receiver)"
	@mkdir -p $(@D)
	@cd bench/go_receiver && GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0 \
		$(GO) build -trimpath -o $(abspath $@).tmp .
	@mv -f $@.tmp $@

go-receiver: $(GO_RECEIVER) ## the seed's receiver in Go into .local/bench (make bench and make test build it)

up: $(VENV)/.synced ## start everything (idempotent) and print the endpoints
	@$(PYTHON) -m local up

down: $(VENV)/.synced ## stop what `make up` started; data stays in .local/
	@$(PYTHON) -m local down

status: $(VENV)/.synced ## state and health of every component
	@$(PYTHON) -m local status

logs: $(VENV)/.synced ## last lines of every log (make logs NAME=receiver FOLLOW=1)
	@$(PYTHON) -m local logs $(NAME) $(if $(FOLLOW),--follow)

clean: $(VENV)/.synced ## stop everything and delete its data and logs
	@$(PYTHON) -m local clean

SHELL_SCRIPTS := .ci/run tools/kube/build.sh tools/strimzi/crds.sh k8s/ensure-secrets.sh k8s/port-forward.sh loadtest/run-in-cluster.sh

lint: $(VENV)/.synced ## ruff (lint and format check), shellcheck
	@$(RUN) ruff check .
	@$(RUN) ruff format --check .
	@$(RUN) shellcheck $(SHELL_SCRIPTS)

format: $(VENV)/.synced ## ruff format and autofix
	@$(RUN) ruff format .
	@$(RUN) ruff check --fix .

typecheck: $(VENV)/.synced ## mypy --strict
	@$(RUN) mypy

# Which tests each test target runs, and what they need built first: tests/targets.mk.
include tests/targets.mk
# pytest's arguments for target $(1): its folders, narrowed by its marker expression if it has one.
pytest_args = $(addprefix tests/,$(FOLDERS_$(1)))$(if $(MARKER_$(1)), -m '$(MARKER_$(1))')
# Target $(1)'s prerequisites: the project's environment and what the tests of its folders need.
test_needs = $(VENV)/.synced $(sort $(foreach folder,$(FOLDERS_$(1)),$(NEEDS_$(folder))))

test-unit: $(call test_needs,test-unit) ## tests that need no running stack
	@$(RUN) pytest $(call pytest_args,test-unit)

test-stack: $(call test_needs,test-stack) ## integration and end-to-end tests on the local stack (starts it)
	@$(RUN) pytest $(call pytest_args,test-stack)

test-chaos: $(call test_needs,test-chaos) ## the fault-injection suite, short profile (part of make test)
	@$(RUN) pytest $(call pytest_args,test-chaos)

chaos: $(call test_needs,chaos) ## the fault-injection suite, full profile: the three-broker scenarios first, then 300 jobs/s on one broker, PostgreSQL away 30 s
	@$(MAKE) --no-print-directory chaos-brokers
	@CHAOS_PROFILE=full $(RUN) pytest $(call pytest_args,chaos)

# The stack `make chaos-brokers` runs on: three brokers, beside `make up`'s stack and not in its
# way (a home and ports of its own); Kafka's jars are make up's. The suite stops it at the end.
THREE_BROKERS := LOCAL_DIR=$(CURDIR)/.local/three-brokers LOCAL_KAFKA_BROKERS=3 \
	LOCAL_KAFKA_PORT=19092 LOCAL_KAFKA_CONTROLLER_PORT=19093 POSTGRES_PORT=15432 \
	LOCAL_CLICKHOUSE_HTTP_PORT=18123 LOCAL_CLICKHOUSE_TCP_PORT=19000 LOCAL_CONNECT_PORT=18083 \
	LOCAL_CONNECT_METRICS_PORT=19404 LOCAL_LAG_EXPORTER_PORT=19308 LOCAL_PROMETHEUS_PORT=19090 \
	RECEIVER_PORT=18001 PROCESSOR_PORT=18002 CONVERTER_PORT=18003 INFORMER_PORT=18004

chaos-brokers: $(call test_needs,chaos-brokers) ## the fault-injection suite on three brokers (its own stack, about 6 min): rolled, leader killed, one away 60 s
	@mkdir -p .local/java .local/three-brokers && ln -sfn ../java .local/three-brokers/java
	@$(THREE_BROKERS) $(RUN) pytest $(call pytest_args,chaos-brokers)

security-check: $(call test_needs,security-check) ## bad input and static checks: schemathesis on both APIs, hypothesis on the stages' decoding, injection tests, NetworkPolicy flows, restricted pods, generated secrets, checkov, Kafka ACLs, ruff's security rules, hadolint
	@$(RUN) ruff check --select S .
	@$(RUN) pytest $(call pytest_args,security-check)

observability-check: $(call test_needs,observability-check) ## dashboard queries against the real Prometheus, alert rules (promtool), dashboard structure
	@$(RUN) pytest $(call pytest_args,observability-check)

# The dashboard shows the running stack's last 30 minutes: `up` starts it if it is not running.
dashboards: up ## the Services dashboard drawn from the local Prometheus to .local/dashboards/services.png
	@$(RUN) python -m monitoring.render

bench: $(VENV)/.synced loadtest-env quix-env go-receiver ## benchmarks on the local stack; figures to bench/results/<time>.json
	@$(RUN) python -m bench

kube-tools: ## build etcd, kube-apiserver, kube-controller-manager for the operator tests (cached)
	@tools/kube/build.sh

strimzi-crds: ## generate Strimzi 1.2.0's CRDs from its jars on Maven Central into .local/kube/crds/strimzi (cached)
	@tools/strimzi/crds.sh

test-operator: $(call test_needs,test-operator) ## the operator, the apply command, the control-plane harness, the offline chart checks (tests/kube)
	@$(RUN) pytest $(call pytest_args,test-operator)

chart-check: $(call test_needs,chart-check) ## the chart, platform manifests, skaffold.yaml and Dockerfiles, checked offline
	@$(RUN) pytest $(call pytest_args,chart-check)

test: lint typecheck $(call test_needs,test) ## everything: lint, types, unit, integration, end to end, operator
	@$(RUN) pytest $(call pytest_args,test)

docs: $(VENV)/.synced ## regenerate the README's configuration table from the settings classes
	@$(PYTHON) -m local.config_table --write

# --- Kubernetes (minikube): see docs/kubernetes.md. These need minikube, kubectl, helm and
# skaffold on PATH; nothing here runs them in `make test`.
KUBE_NAMESPACE ?= jobflow
RELEASE ?= jobflow
PROFILE ?=
LOADTEST_PROFILE ?= seed
MINIKUBE_CPUS ?= 4
MINIKUBE_MEMORY ?= 8g
# A network plugin that enforces NetworkPolicies (the chart's are on by default).
MINIKUBE_CNI ?= calico
export KUBE_NAMESPACE RELEASE LOADTEST_PROFILE

require = @for tool in $(1); do command -v $$tool >/dev/null || { \
	echo "$$tool is not on PATH (docs/kubernetes.md lists what to install)" >&2; exit 1; }; done

minikube-up: ## start minikube sized for jobflow (MINIKUBE_CPUS=4, MINIKUBE_MEMORY=8g) with Calico and metrics-server
	$(call require,minikube)
	minikube start --cpus $(MINIKUBE_CPUS) --memory $(MINIKUBE_MEMORY) --cni $(MINIKUBE_CNI) --addons metrics-server

deploy: ## build the images into minikube and deploy everything (PROFILE=lite, loadtest or lite,loadtest)
	$(call require,skaffold kubectl helm)
	skaffold run $(if $(PROFILE),--profile $(PROFILE))

port-forward: ## receiver 8001, informer 8004, Grafana 3000, Prometheus 9090 on 127.0.0.1 (Ctrl-C stops)
	$(call require,kubectl)
	@k8s/port-forward.sh

smoke: ## helm test: one job through the deployed pipeline, until the informer says finish
	$(call require,helm)
	helm test $(RELEASE) -n $(KUBE_NAMESPACE) --logs --timeout 5m

loadtest: ## yandex-tank in the cluster (LOADTEST_PROFILE=seed or ramp); artifacts to loadtest/results/
	$(call require,kubectl helm)
	@loadtest/run-in-cluster.sh

undeploy: ## remove what `make deploy` installed; namespaces, volumes and generated Secrets stay
	$(call require,skaffold helm)
	@# The chart first, while Strimzi's topic operator still runs to clear its KafkaTopics' finalizers.
	helm uninstall $(RELEASE) -n $(KUBE_NAMESPACE) --wait --ignore-not-found
	skaffold delete

# --- A one-node Kubernetes cluster on this machine (docs/kubernetes.md, "Run it on this
# machine"): the node's processes under .local/cluster, in a network namespace of their own.
cluster-up: $(VENV)/.synced kube-tools ## start a one-node Kubernetes cluster on this machine (idempotent)
	@$(PYTHON) -m local.cluster up

cluster-down: $(VENV)/.synced ## stop the cluster (only what cluster-up started); its state stays in .local/cluster
	@$(PYTHON) -m local.cluster down

cluster-status: $(VENV)/.synced ## state and pid of every process of the cluster
	@$(PYTHON) -m local.cluster status

images: cluster-up ## build every image (services, Connect, the tank) into the cluster's containerd
	@$(PYTHON) -m local.cluster images

cluster-deploy: images ## install (or upgrade) jobflow on the cluster with helm: lite profile, the host's data plane
	@$(PYTHON) -m local.cluster deploy

test-cluster: $(call test_needs,test-cluster) ## jobflow on the one-node cluster: install, helm test, curl, upgrade and kill under load, uninstall (starts it)
	@$(RUN) pytest $(call pytest_args,test-cluster)
