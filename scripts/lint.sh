#!/usr/bin/env bash
# make lint: formatting, vet, staticcheck (pinned, installed if missing) and the layering rules.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
STATICCHECK_VERSION=v0.8.2 # staticcheck 2026.2.2

unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then echo "gofmt needed:"; echo "$unformatted"; exit 1; fi
$GO vet ./...

bin="$($GO env GOPATH)/bin/staticcheck"
if ! "$bin" -version 2>/dev/null | grep -q "(${STATICCHECK_VERSION#v})"; then
  $GO install "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION"
fi
"$bin" ./...

# The engine is portable: it builds for another OS (a host such as an app extension embeds the client),
# and only package daemon ties it to Linux sockets, TUN queues and host configuration.
GOOS=darwin $GO vet ./engine/...
bad=$($GO list -deps ./engine/... | grep -E '^github.com/salvovpn/salvo/(batch|offload|netcfg|config|daemon)(/|$)' || true)
if [ -n "$bad" ]; then echo "engine must not import:"; echo "$bad"; exit 1; fi
echo "lint: clean"
