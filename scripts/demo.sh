#!/usr/bin/env bash
# Runs lbctl's demo stack on loopback: installs nginx and Consul if missing,
# builds lbctl and the greeter, then starts Consul, greeter backends, nginx
# rendered by lbctl, and a client calling through it.
set -euo pipefail
cd "$(dirname "$0")/.."

consul=$(bash scripts/install-deps.sh)
bin="${LBCTL_CACHE:-$HOME/.cache/lbctl}/bin"
mkdir -p "$bin"
go build -o "$bin/" ./cmd/lbctl ./cmd/greeter-server ./cmd/lbctl-demo
nginx=$(command -v nginx || echo /usr/sbin/nginx)
exec "$bin/lbctl-demo" -lbctl "$bin/lbctl" -greeter "$bin/greeter-server" -consul "$consul" -nginx "$nginx" "$@"
