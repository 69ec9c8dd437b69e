# berth's build. `make help` lists the targets.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

GO ?= go
K8S_VERSION ?= v1.36.3
# Binaries (etcd, kube-apiserver) and CRDs of the test control plane, built once from
# the Go module proxy, outside the repository.
CONTROLPLANE ?= $(HOME)/.cache/berth/controlplane-$(K8S_VERSION)
RUN_BIN ?= $(HOME)/.cache/berth/berth-run
export BERTH_CONTROLPLANE := $(CONTROLPLANE)
export K8S_VERSION
# ko reads .ko.yaml unless told otherwise; ours is ko.yaml.
export KO_CONFIG_PATH := $(CURDIR)/ko.yaml

TEST_FLAGS ?= -count=1 -timeout 30m
BENCH_FLAGS ?= -run '^$$' -bench . -benchtime 1x -count=1 -timeout 30m

.PHONY: help
help: ## List the targets.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Compile every package and function.
	$(GO) build ./...

.PHONY: controlplane
controlplane: ## Build etcd and kube-apiserver and gather CRDs into $(CONTROLPLANE) (first time: about 6 min).
	@bash .ci/controlplane.sh $(CONTROLPLANE)

.PHONY: run
run: controlplane ## Run berth locally: control plane, the three functions chained by events, one demo install (TRACES=1: print its trace and the ports' fill). Ctrl-C stops.
	@$(GO) build -o $(RUN_BIN) ./pkg/testing/berth-run
	@exec $(RUN_BIN) $(if $(TRACES),-traces)

.PHONY: test-unit
test-unit: ## The fast lane: every test that needs no control plane (-short; nothing to build first).
	$(GO) test -short -count=1 ./...

.PHONY: test
test: controlplane ko-cli ## Run every test (unit and real API-server integration).
	$(GO) test $(TEST_FLAGS) ./...

.PHONY: lint
lint: ## gofmt and go vet (the e2e test included).
	@out=$$(gofmt -l $$(git ls-files --cached --others --exclude-standard '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags e2e ./pkg/testing/e2e/

.PHONY: cluster
cluster: ## Build the e2e cluster's parts (kubelet, kube-proxy, CoreDNS, MetalLB, Knative) into $(CONTROLPLANE) (first time: about 13 min).
	@bash .ci/cluster.sh $(CONTROLPLANE)

.PHONY: e2e
e2e: cluster ko-cli ## Prove berth on a real single-node cluster with Knative (root; Debian's containerd, runc, CNI plugins, iptables).
	$(GO) test -tags e2e -count=1 -timeout 60m -v ./pkg/testing/e2e/

HELM_VERSION ?= v3.22.0
KO_VERSION ?= v0.18.1
KO ?= $(CONTROLPLANE)/bin/ko

.PHONY: ko-cli
ko-cli: ## Build the ko CLI into $(CONTROLPLANE)/bin.
	@[ -x $(KO) ] || { echo "==> building ko $(KO_VERSION)"; GOBIN=$(CONTROLPLANE)/bin GOFLAGS=-mod=mod $(GO) install github.com/google/ko@$(KO_VERSION); }

.PHONY: resolve
resolve: ko-cli ## Build the images (KO_DOCKER_REPO) and print config/ with their digests.
	$(KO) resolve -f config/

.PHONY: deploy
deploy: ko-cli ## Build the images and apply config/ to the current cluster (needs Knative Serving and Eventing).
	$(KO) apply -f config/

.PHONY: helm-cli
helm-cli: ## Build the helm CLI (the install benchmark's baseline) into $(CONTROLPLANE)/bin.
	@[ -x $(CONTROLPLANE)/bin/helm ] || { echo "==> building helm $(HELM_VERSION) CLI"; GOBIN=$(CONTROLPLANE)/bin GOFLAGS=-mod=mod $(GO) install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION); }

.PHONY: bench
bench: controlplane helm-cli ## Run the benchmarks; each prints its figure beside a same-run baseline.
	$(GO) test $(BENCH_FLAGS) ./...
