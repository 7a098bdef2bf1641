#!/usr/bin/env bash
# Runs all of lbctl's tests against a real Consul and a real nginx, installing
# them first if they are missing (see install-deps.sh). Same command locally and in CI.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh >/dev/null
export LBCTL_CACHE="${LBCTL_CACHE:-$HOME/.cache/lbctl}"

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then echo "gofmt needed: $unformatted"; exit 1; fi
echo "== go vet"
go vet ./...
echo "== go test -race"
go test -race -count=1 -timeout 15m ./... "$@"
