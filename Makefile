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
RELEASE_BIN ?= bin/scalebox-static

PREFIX  ?= /usr/local
# Modulefiles go to $(MODULEFILES)/scalebox/$(VERSION)(.lua): point
# `module use` at $(MODULEFILES) (Lmod reads the .lua, Environment
# Modules the Tcl file).
MODULEFILES ?= $(PREFIX)/modulefiles

.PHONY: build demo test unit fuzz lint bench ci clean deps cluster-up cluster-down install release

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/scalebox

demo: build
	rm -rf $(DEMO_STATE)
	$(BIN) --log-level warn --state-dir $(DEMO_STATE) run examples/primes

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# SCALEBOX_STRICT=1: the broker checks that every task state change records
# the state it left (broker.Options.Strict).
unit:
	SCALEBOX_STRICT=1 $(GO) test -race -count=1 -timeout 30m ./...

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

# The real components the integration tests use (root, apt): Slurm 22.05,
# munge, slurmrestd, Lmod, a Debian trixie chroot with Slurm 24.11 and
# Environment Modules, and Apptainer 1.4.3 built from its Go module
# (scripts/apptainer.sh; cached in $SCALEBOX_CI_CACHE), and openssh-server.
# `make cluster-up` starts the local test clusters "ci" and "trixie"
# (scripts/cluster.sh says how they are set up) and an sshd on
# 127.0.0.1:2222 acting as a remote site for sftp (scripts/sshd.sh).
deps:
	bash scripts/cluster.sh deps trixie
	bash scripts/apptainer.sh install
	bash scripts/sshd.sh deps

cluster-up:
	bash scripts/cluster.sh up ci
	bash scripts/cluster.sh up trixie
	bash scripts/sshd.sh up

cluster-down:
	-bash scripts/sshd.sh down
	-bash scripts/cluster.sh down trixie
	bash scripts/cluster.sh down ci

# An HPC installation: binary, completions, man page and modulefiles.
install: build
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1 \
		$(DESTDIR)$(PREFIX)/share/bash-completion/completions $(DESTDIR)$(PREFIX)/share/zsh/site-functions \
		$(DESTDIR)$(MODULEFILES)/scalebox
	install -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/scalebox
	$(BIN) completion bash > $(DESTDIR)$(PREFIX)/share/bash-completion/completions/scalebox
	$(BIN) completion zsh > $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_scalebox
	$(BIN) man > $(DESTDIR)$(PREFIX)/share/man/man1/scalebox.1
	$(BIN) modulefile --prefix $(PREFIX) lua > $(DESTDIR)$(MODULEFILES)/scalebox/$(VERSION).lua
	$(BIN) modulefile --prefix $(PREFIX) tcl > $(DESTDIR)$(MODULEFILES)/scalebox/$(VERSION)
	@echo "installed scalebox $(VERSION) in $(PREFIX); modulefiles in $(MODULEFILES): module use $(MODULEFILES); module load scalebox"

# A statically linked binary (cgo SQLite included) that runs on any
# x86-64 Linux of the same or newer kernel ABI, e.g. inside a trixie chroot.
release:
	CGO_ENABLED=1 $(GO) build -trimpath -tags 'osusergo netgo sqlite_omit_load_extension' \
		-ldflags "$(LDFLAGS) -s -w -linkmode external -extldflags '-static'" -o $(RELEASE_BIN) ./cmd/scalebox
	@file $(RELEASE_BIN) 2>/dev/null || true

clean:
	rm -rf bin .scalebox
