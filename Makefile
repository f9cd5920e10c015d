# pushgate — build, test and code generation.
#
#   make run        run pushgate with its defaults (one node, loopback only)
#   make test       everything CI checks: lint, generated code, go test -race
#   make generate   regenerate gen/ from proto/
#   make bench      the Go benchmarks

GO         ?= go
TOOLS      := $(CURDIR)/.tools/bin
export PATH := $(TOOLS):$(PATH)

# Pinned so that generated code is byte-for-byte reproducible.
BUF_VERSION                := v1.75.0
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2

.PHONY: run test test-go test-js generate lint check-generated tools bench e2e-binary js-deps chromium

run:
	$(GO) run ./cmd/pushgate

tools: $(TOOLS)/buf $(TOOLS)/protoc-gen-go $(TOOLS)/protoc-gen-go-grpc

$(TOOLS)/buf:
	GOBIN=$(TOOLS) $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
$(TOOLS)/protoc-gen-go:
	GOBIN=$(TOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
$(TOOLS)/protoc-gen-go-grpc:
	GOBIN=$(TOOLS) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)

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

test: lint check-generated test-go test-js

test-go:
	$(GO) test -race -count=1 -timeout 20m ./...

# The JavaScript client and the pages, against the real binary, in Node and
# headless Chromium. Screenshots land in test-artifacts/.
JS := gateway/web/js
test-js: e2e-binary js-deps chromium
	cd $(JS) && node --test --test-concurrency=1 test/

e2e-binary:
	$(GO) build -o .tools/pushgate-e2e ./cmd/pushgate

js-deps:
	@command -v npm >/dev/null || $(call need,npm,nodejs npm)
	cd $(JS) && npm ci --no-audit --no-fund --loglevel=error

chromium:
	@command -v chromium >/dev/null || $(call need,chromium,chromium)

# need installs Debian packages when a command is missing: through apt as
# root, otherwise it says what to install and fails.
define need
	{ if [ "$$(id -u)" = 0 ]; then echo "installing $(2)"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2) >/dev/null; \
	  else echo "$(1) is missing: install it with 'sudo apt-get install $(2)'"; exit 1; fi; }
endef

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...
