# pushgate — build, test and code generation.
#
#   make run        run pushgate with its defaults (one node, loopback only)
#   make test       everything CI checks: lint, generated code, go test -race
#   make generate   regenerate gen/ from proto/
#   make bench      the Go benchmarks
#   make release    static binaries and SHA256SUMS in dist/

GO         ?= go
TOOLS      := $(CURDIR)/.tools/bin
export PATH := $(TOOLS):$(PATH)

# Pinned so that generated code is byte-for-byte reproducible.
BUF_VERSION                := v1.75.0
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
STATICCHECK_VERSION        := v0.8.2
GRPCURL_VERSION            := v1.9.4
# Renders and lints deploy/helm/pushgate in the tests (built once, on first use).
HELM_VERSION               := v3.19.5

.PHONY: release run test test-go test-js generate lint check-generated tools bench e2e-binary deps soak

run:
	$(GO) run ./cmd/pushgate

tools: $(TOOLS)/buf $(TOOLS)/protoc-gen-go $(TOOLS)/protoc-gen-go-grpc $(TOOLS)/staticcheck $(TOOLS)/grpcurl

$(TOOLS)/buf:
	GOBIN=$(TOOLS) $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
$(TOOLS)/protoc-gen-go:
	GOBIN=$(TOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
$(TOOLS)/protoc-gen-go-grpc:
	GOBIN=$(TOOLS) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
$(TOOLS)/staticcheck:
	GOBIN=$(TOOLS) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
# The README's quickstart uses grpcurl; TestReadmeQuickstart runs it.
$(TOOLS)/grpcurl:
	GOBIN=$(TOOLS) $(GO) install github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION)
$(TOOLS)/helm:
	GOBIN=$(TOOLS) $(GO) install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)

generate: tools
	buf generate

# gen/ must be exactly what buf generates from proto/ today.
check-generated: tools
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	buf generate -o "$$tmp" && \
	if ! diff -r "$$tmp/gen" gen >/dev/null; then \
		echo "gen/ is stale: run 'make generate' and commit the result"; diff -r "$$tmp/gen" gen | head -20; exit 1; \
	fi

lint: tools
	buf lint
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.tools/*')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	staticcheck ./...

test: lint check-generated deps test-go test-js

# The shared suites (end-to-end, delivery, envelope, hostile input, ops)
# run once per engine: memory with everything else, then Redis, each server
# on a redis-server of its own. The cluster tests, the soak and the deploy
# and example checks choose their engine themselves. The cluster tests run
# a second time with every node's engine sharded over three redis-servers.
REDIS_SUITES_SKIP := Cluster|Soak|BackendExamples|Deploy|Readme|DocLinks
test-go: tools
	$(GO) test -race -count=1 -timeout 20m ./...
	PUSHGATE_TEST_ENGINE=redis $(GO) test -race -count=1 -timeout 20m -skip '$(REDIS_SUITES_SKIP)' ./cmd/pushgate/
	PUSHGATE_TEST_SHARDS=3 $(GO) test -race -count=1 -timeout 20m -run '^TestCluster' ./cmd/pushgate/

# The JavaScript client and the pages, against the real binary, in Node and
# headless Chromium. Screenshots land in test-artifacts/.
JS := gateway/web/js
test-js: e2e-binary deps
	cd $(JS) && npm ci --no-audit --no-fund --loglevel=error
	cd $(JS) && node --test --test-concurrency=1 test/*.test.mjs
	cd $(JS) && PUSHGATE_TEST_ENGINE=redis node --test --test-concurrency=1 test/*.test.mjs

e2e-binary:
	$(GO) build -o .tools/pushgate-e2e ./cmd/pushgate

# What the tests need beyond Go: redis-server (the Redis engine), Chromium
# (browser tests), the Java, Python and Node gRPC toolchains (the backend
# examples; curl for the shell one), and Node itself. Installed
# through apt when missing and running as root; otherwise the missing
# packages are named and the target fails.
DEBIAN_PKGS := chromium protobuf-compiler libprotobuf-dev protobuf-compiler-grpc-java-plugin \
	libgrpc-java libprotobuf-java libnetty-java libperfmark-java libguava-java \
	libgeronimo-annotation-1.3-spec-java python3-grpcio python3-grpc-tools redis-server curl
deps:
	@missing=$$(for p in $(DEBIAN_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	command -v javac >/dev/null || missing="$$missing default-jdk-headless"; \
	command -v npm >/dev/null || missing="$$missing nodejs npm"; \
	missing=$$(echo $$missing); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then echo "missing packages: sudo apt-get install $$missing"; exit 1; fi; \
	echo "installing: $$missing"; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null

# The Redis engine's soak: 3 node processes, 5,000 connections churning for
# SOAK (default 5m) while sends flow; then no presence may be left in Redis
# and node memory must be back to its baseline.
SOAK ?= 5m
soak: deps
	PUSHGATE_SOAK=$(SOAK) $(GO) test -count=1 -timeout 30m -run '^TestClusterSoak$$' -v ./cmd/pushgate/

# Release binaries: static (no cgo), stripped, built without local paths,
# with the version, commit and build date set through the linker (see
# internal/version). VERSION is the newest release in CHANGELOG.md unless
# given; RELEASE_TARGETS and DIST may be narrowed, e.g.
#   make release RELEASE_TARGETS=linux/amd64
VERSION         ?= $(shell sed -n 's/^\#\# \[\([0-9][^]]*\)\].*/\1/p' CHANGELOG.md | head -1)
COMMIT          ?= $(shell git rev-parse HEAD 2>/dev/null)$(shell git diff --quiet HEAD 2>/dev/null || echo -dirty)
BUILD_DATE      ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
RELEASE_TARGETS ?= linux/amd64 linux/arm64 darwin/arm64
DIST            ?= dist
VERSION_PKG     := pushgate/internal/version
release:
	@test -n "$(VERSION)" || { echo "no version: add a release to CHANGELOG.md or set VERSION"; exit 1; }
	rm -rf "$(DIST)" && mkdir -p "$(DIST)"
	@set -e; for t in $(RELEASE_TARGETS); do \
		os=$${t%/*}; arch=$${t#*/}; out="$(DIST)/pushgate-$(VERSION)-$$os-$$arch"; \
		echo "building $$out"; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -buildvcs=false \
			-ldflags "-s -w -X $(VERSION_PKG).version=$(VERSION) -X $(VERSION_PKG).commit=$(COMMIT) -X $(VERSION_PKG).date=$(BUILD_DATE)" \
			-o "$$out" ./cmd/pushgate; \
	done
	cd "$(DIST)" && sha256sum pushgate-* > SHA256SUMS && cat SHA256SUMS

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...
