#!/usr/bin/env bash
# Prints the version of the salvo package, which `salvo version` of the packaged binary prints too. A
# package version must start with a digit (git describe's commit names need not): the tag without its v
# when HEAD is a v* tag; TAG+git<date>.<commit> past one; 0.0.0~git<date>.<commit> before the first
# (~ sorts before anything, so the first tag is an upgrade). <date> is the commit's (UTC), not today's, so
# one commit makes one version; .dirty marks uncommitted changes.
set -euo pipefail
cd "$(dirname "$0")/.."
date=$(TZ=UTC git log -1 --format=%cd --date=format-local:%Y%m%d)
commit=$(git rev-parse --short=12 HEAD)
tag=$(git describe --tags --abbrev=0 --match 'v[0-9]*' 2>/dev/null || true)
if [ -z "$tag" ]; then
  version="0.0.0~git$date.$commit"
elif [ "$(git rev-list -n 1 "$tag")" = "$(git rev-parse HEAD)" ]; then
  version=${tag#v}
else
  version="${tag#v}+git$date.$commit"
fi
version=${version//-/\~} # v1.2.0-rc1: 1.2.0~rc1, before 1.2.0
git update-index -q --refresh
git diff-index --quiet HEAD -- || version="$version.dirty"
echo "$version"
