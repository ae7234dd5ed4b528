#!/usr/bin/env bash
# Rebuild the breaking-change baseline, deliberately, from the protos as committed at
# a git revision (default HEAD; a release tag when there is one):
#
#   bash protos/baseline/update.sh [REV]
#
# It reads conveyor/v1/*.proto with `git show REV:path` (nothing in the work tree or
# the repository changes), builds them with the vendored google protos of the work
# tree and writes protos/baseline/conveyor-v1.binpb. CI (`.ci/test.sh`) then runs
#   buf breaking protos --against protos/baseline/conveyor-v1.binpb
# Commit the new image with the release whose contract it is, never to make a
# breaking change pass.
set -euo pipefail
cd "$(dirname "$0")/../.."
rev=${1:-HEAD}
buf=${BUF:-.venv/bin/buf}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/conveyor/v1"
git ls-tree --name-only "$rev" protos/conveyor/v1/ | while read -r path; do
  case "$path" in *.proto) git show "$rev:$path" >"$tmp/conveyor/v1/$(basename "$path")" ;; esac
done
cp -r protos/google "$tmp/google"
cp protos/buf.yaml "$tmp/buf.yaml"
"$buf" build "$tmp" --exclude-source-info -o protos/baseline/conveyor-v1.binpb
echo "baseline: protos/baseline/conveyor-v1.binpb from $rev ($(git rev-parse --short "$rev"))"
