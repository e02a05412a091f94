#!/usr/bin/env bash
# make package: the salvo .deb and .rpm in bin/ from packaging/nfpm.yaml. Expects the binary, stamped with
# PKG_VERSION, in bin/package/salvo (the Makefile builds it); generates the example configurations and
# the man page from it (packaging/gen) and installs nfpm, pinned, into bin/tools if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin:/usr/sbin:/sbin
GO=${GO:-go}
NFPM_VERSION=v2.45.2
: "${PKG_VERSION:?set PKG_VERSION (scripts/package-version.sh)}"
stage=bin/package

nfpm=bin/tools/nfpm
if ! $GO version -m "$nfpm" 2>/dev/null | grep -Eq "^\s+mod\s+github.com/goreleaser/nfpm/v2\s+$NFPM_VERSION\s"; then
  echo "== installing nfpm $NFPM_VERSION into bin/tools"
  GOBIN="$PWD/bin/tools" $GO install "github.com/goreleaser/nfpm/v2/cmd/nfpm@$NFPM_VERSION"
fi

# The binary must say the version the package says.
got=$("$stage/salvo" version)
case "$got" in
"salvo $PKG_VERSION "*) ;;
*) echo "package: $stage/salvo says \"$got\", not version $PKG_VERSION" >&2; exit 1 ;;
esac

date=$(TZ=UTC git log -1 --format=%cd --date=format-local:%Y-%m-%d)
$GO run ./packaging/gen --salvo "$stage/salvo" --out "$stage" --version "$PKG_VERSION" --date "$date"

# Files get the commit's time, so one commit makes the same package twice.
export SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)
export PKG_VERSION PKG_ARCH=$($GO env GOARCH)
for packager in deb rpm; do
  "$nfpm" package --config packaging/nfpm.yaml --packager "$packager" --target bin/
done
