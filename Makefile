# Salvo: see README.md. Every target works on a fresh machine as root (Linux).
GO      ?= go
PKGS    := ./...
BIN     := bin/salvo
# The version `salvo version` prints: the nearest tag and how far past it, or the commit (git describe).
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/salvovpn/salvo/internal/buildinfo.Version=$(VERSION)
FUZZTIME ?= 30s

.PHONY: all build deps test test-short demo bench bench-short bench-sessions bench-storm bench-micro chaos fuzz fuzz-ci lint package package-test clean

all: build

build:
	$(GO) build -trimpath -buildvcs=auto -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/salvo

# What the tests, the demo and the benchmarks run (nft, ping, iperf3, wg...): installed if missing.
deps:
	./scripts/deps.sh

# The whole suite: vet, unit and end-to-end tests (network namespaces, needs root) with the race detector
# (the end-to-end tests run daemons built with -race too), the seed corpora of every fuzz target (go test
# runs them as ordinary tests), and the end-to-end suite a second time with ebpf = on.
test: deps
	$(GO) vet $(PKGS)
	$(GO) test -race -count=1 -timeout 20m $(PKGS)
	# The end-to-end suite again with the eBPF classifier attached to every gateway.
	SALVO_E2E_EBPF=on $(GO) test -race -count=1 -timeout 20m ./e2e/

# Unit tests only, no namespaces.
test-short:
	$(GO) test -short -count=1 $(PKGS)

demo: deps build
	./scripts/demo.sh

# System benchmark: bare veth, Salvo, wireguard-go (pinned, built from the module proxy) and OpenVPN 2.6
# (Debian's, static key, no DCO) side by side in one run; raw results in bench-results.json, the table in
# bench-results.md (paste into BENCHMARKS.md), the plot in $(PLOT) (PLOT=docs/bench.svg for the one
# BENCHMARKS.md shows); `go run ./bench/cmd/salvobench --plot-only --json bench-results.json --plot F.svg`
# redraws it. BENCHFLAGS selects systems, duration, runs..., e.g. BENCHFLAGS="--systems salvo,wireguard-go --runs 1".
BENCHFLAGS ?=
PLOT ?= bench-results.svg
bench: deps
	$(GO) run ./bench/cmd/salvobench --json bench-results.json --markdown bench-results.md --plot $(PLOT) $(BENCHFLAGS)

bench-short:
	$(GO) run ./bench/cmd/salvobench --short

# Many sessions (10,000 real logins over 10 users with cheap argon2id) against one gateway: login time,
# RSS per session, rekey CPU, and with every session sending packets/s, cross-worker packets/s and the
# gateway's CPU-ns per packet and per byte, for 1, 2 and one worker per CPU, eBPF on and off (about 15
# minutes; SESSIONFLAGS="--sessions 64" for the old, quick run).
bench-sessions:
	$(GO) run ./bench/cmd/salvosessions $(SESSIONFLAGS)

# Login storms: 100 real clients with the default argon2id parameters log in at once, then 1000 with cheap
# ones, which also come back after a gateway SIGKILL and restart (STORMFLAGS to change).
bench-storm: deps
	$(GO) run ./bench/cmd/salvostorm --clients 100 --params default $(STORMFLAGS)
	$(GO) run ./bench/cmd/salvostorm --clients 1000 --params cheap --restart $(STORMFLAGS)

# Bad networks: the chaos tests at full size (64 MiB transfers, burst loss, a 30 s blackout); ~4 min.
chaos: deps
	SALVO_CHAOS=full $(GO) test -race -count=1 -timeout 30m -v -run '^TestChaos' ./e2e/

# Micro-benchmarks of the hot functions; compare runs with benchstat.
bench-micro:
	$(GO) test -run '^$$' -bench . -benchmem -count 5 ./protocol/... ./batch/... ./engine/...

# Run every fuzz target for FUZZTIME each (scripts/fuzz.sh says how a Go fuzzer bug is told from a finding).
fuzz:
	GO=$(GO) FUZZTIME=$(FUZZTIME) ./scripts/fuzz.sh

# What CI fuzzes on every submission: every target for 20 s, so new inputs are searched, not only the seeds.
fuzz-ci:
	$(MAKE) fuzz FUZZTIME=20s

# gofmt, vet, staticcheck (pinned; installed if missing) and the layering rules (scripts/lint.sh).
lint:
	GO=$(GO) ./scripts/lint.sh

# The .deb and .rpm in bin/ (nfpm, pinned, installed into bin/tools if missing): salvo, the systemd units,
# example configurations, man page and completion (packaging/). PKG_VERSION, which the packaged binary's
# `salvo version` prints too, is 0.0.0~git<date>.<commit> until a v* tag (scripts/package-version.sh).
PKG_VERSION ?= $(shell ./scripts/package-version.sh)
package:
	CGO_ENABLED=0 $(MAKE) build VERSION=$(PKG_VERSION) BIN=bin/package/salvo
	GO=$(GO) PKG_VERSION=$(PKG_VERSION) ./scripts/package.sh

# Installs the .deb into a scratch root with dpkg, checks its files, units (systemd-analyze verify) and
# version, purges it and checks that nothing is left (scripts/package-test.sh).
package-test: package
	PKG_VERSION=$(PKG_VERSION) ./scripts/package-test.sh

clean:
	rm -rf bin
