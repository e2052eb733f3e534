# Scalebox for Slurm. `make demo` runs examples/primes locally; `make test` runs the tests.
GO      ?= go
BIN     := bin/scalebox
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
# How long each fuzz target runs under `make test` (CI runs them briefly).
FUZZTIME ?= 15s
# Minimizing a new interesting input is not counted in -fuzztime and may run
# past it (then `go test` fails with "context deadline exceeded"); keep it short.
FUZZMIN ?= 2s
DEMO_STATE ?= .scalebox/demo

.PHONY: build demo test unit fuzz lint bench ci clean

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/scalebox

demo: build
	rm -rf $(DEMO_STATE)
	$(BIN) --log-level warn --state-dir $(DEMO_STATE) run examples/primes

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

unit:
	$(GO) test -race -count=1 -timeout 30m ./...

fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParseApp$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMIN) ./dataflow
	$(GO) test -run '^$$' -fuzz '^FuzzParseMessageLine$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMIN) ./dataflow
	$(GO) test -run '^$$' -fuzz '^FuzzParseEnvFile$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMIN) ./dataflow
	$(GO) test -run '^$$' -fuzz '^FuzzAPI$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMIN) ./server
	$(GO) test -run '^$$' -fuzz '^FuzzReadOutputs$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMIN) ./pilot

test: lint unit fuzz

bench: build
	bash bench/run.sh

ci:
	bash .ci/run

clean:
	rm -rf bin .scalebox
