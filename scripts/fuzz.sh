#!/usr/bin/env bash
# Runs every fuzz target in the module for FUZZTIME (default 30s) each; fails on the first finding.
#
# Go 1.26's fuzz coordinator can fail a target with a bare "context deadline exceeded" when -fuzztime runs
# out while a worker is mid-input (golang/go#75804, fixed in Go 1.27): nothing was found and nothing was
# written. On two busy cores it is common (FuzzConsumeRequest hit it in both full fuzz-ci runs seen), so
# such a run is tried up to three times; a run that wrote a failing input to testdata/fuzz fails the script
# at once, and so does any other failure. A retry cannot hide a finding: the fuzzer saves every failing
# input before it reports it. New inputs are minimised for at most 5 s (the default minute looks like a
# hang).
set -uo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-30s}

# corpus lists the inputs saved for target $2 of the package in directory $1.
corpus() { ls "$1/testdata/fuzz/$2" 2>/dev/null | sort; }

for pkg in $($GO list ./...); do
  dir=$($GO list -f '{{.Dir}}' "$pkg")
  for f in $($GO test -list '^Fuzz' "$pkg" | grep '^Fuzz'); do
    for attempt in 1 2 3; do
      echo "== $pkg $f"
      before=$(corpus "$dir" "$f")
      out=$($GO test -run '^$' -fuzz "^$f\$" -fuzztime "$FUZZTIME" -fuzzminimizetime 5s "$pkg" 2>&1)
      rc=$?
      printf '%s\n' "$out"
      [ $rc -eq 0 ] && break
      if [ "$(corpus "$dir" "$f")" != "$before" ]; then
        echo "fuzz: $f found a failing input (saved under $dir/testdata/fuzz/$f)"; exit 1
      fi
      if [ $attempt -lt 3 ] && printf '%s\n' "$out" | grep -qx '    context deadline exceeded'; then
        echo "fuzz: $f stopped on Go's coordinator deadline race with nothing found (try $attempt of 3); again"
        continue
      fi
      echo "fuzz: $f failed"; exit 1
    done
  done
done
