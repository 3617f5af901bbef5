# Orbweaver build entry points. Tool versions are pinned here and nowhere else.
BUF_VERSION            := v1.75.0
PROTOC_GEN_GO_VERSION  := v1.36.12
PROTOC_GEN_GRPC_VERSION := v1.6.2
GRPCURL_VERSION        := v1.9.4

TOOLS := $(CURDIR)/.bin
export PATH := $(TOOLS):$(PATH)

.PHONY: all build setup tools generate generate-check lint test test-short fuzz demo clean

all: build

## setup: install everything the project needs (apt packages, Go modules, tools). Idempotent.
setup:
	./scripts/setup.sh

## build: put orbweaver-agent and orbweaver-controller in bin/
build:
	go build -o bin/orbweaver-agent ./agent/cmd/orbweaver-agent
	go build -o bin/orbweaver-controller ./controller/cmd/orbweaver-controller

## tools: pinned code generators and grpcurl into .bin/
tools:
	GOBIN=$(TOOLS) go install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
	GOBIN=$(TOOLS) go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(TOOLS) go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GRPC_VERSION)
	GOBIN=$(TOOLS) go install github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION)

## generate: lint the protos and regenerate gen/ (the only way gen/ changes)
generate: tools
	buf lint
	rm -rf gen
	buf generate

## generate-check: fail when gen/ is not what the protos produce
generate-check: generate
	git diff --exit-code -- gen

lint:
	buf lint
	go vet ./...

## test: the whole suite (needs root for live capture on lo; Postgres binaries from apt)
test:
	go test -count=1 ./...

## fuzz: run every fuzz target for FUZZTIME each (default 10s)
FUZZTIME ?= 10s
fuzz:
	./scripts/fuzz.sh $(FUZZTIME)

## demo: private Postgres + controller + agent on lo + a demo mesh of services
demo: build
	./bin/orbweaver-controller --demo

clean:
	rm -rf bin

## bench: performance benchmark against the budget of issue 6 (table + bench-results/latest.json);
## smoke size by default, BENCHFLAGS="-size full" for the budget's sizes.
## Phony: the bench/ directory would otherwise make the target "up to date".
.PHONY: bench
bench:
	go run ./bench $(BENCHFLAGS)
