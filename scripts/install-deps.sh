#!/usr/bin/env bash
# Installs what lbctl's tests and demo need on a fresh Debian machine with Go:
# nginx-light and its Lua module (live upstreams), iproute2 and iptables (the
# many-hosts tests) from Debian, and a real Consul
# agent built from the Go module proxy.
# Idempotent and fast when everything is already there. Prints the Consul path last.
set -euo pipefail

CACHE="${LBCTL_CACHE:-$HOME/.cache/lbctl}"
CONSUL_VERSION=1.21.0
CONSUL_BIN="$CACHE/consul-$CONSUL_VERSION/consul"
CT_VERSION=0.43.0
CT_BIN="$CACHE/consul-template-$CT_VERSION/consul-template"

log() { echo "install-deps: $*" >&2; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

install_debian_packages() {
  local missing=()
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
  # Live upstreams (package live): balancer_by_lua, a shared dict, cjson.
  [ -f /usr/lib/nginx/modules/ngx_http_lua_module.so ] || missing+=(libnginx-mod-http-lua)
  compgen -G '/usr/lib/*/lua/5.1/cjson.so' >/dev/null || missing+=(lua-cjson)
  command -v unshare >/dev/null 2>&1 || missing+=(util-linux)
  # The many-hosts tests (package hosts): network namespaces, veths, a bridge, and
  # iptables inside those namespaces to cut a host off.
  command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || missing+=(iproute2)
  command -v iptables >/dev/null 2>&1 || [ -x /usr/sbin/iptables ] || missing+=(iptables)
  # A real compose parser for the docker-compose.yaml test (needs no engine).
  command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt-get install ${missing[*]}"
  as_root apt-get update -qq
  # The package's postinst starts the system nginx; tests never use it, so stop it.
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  as_root sh -c 'command -v systemctl >/dev/null && systemctl stop nginx 2>/dev/null; [ -f /run/nginx.pid ] && kill "$(cat /run/nginx.pid)" 2>/dev/null; true'
}

# Consul is not in Debian. Its go.mod replaces its nested modules with local
# folders the module zip leaves out, so fetch each at the version go.mod requires.
build_consul() {
  [ -x "$CONSUL_BIN" ] && return 0
  log "building consul v$CONSUL_VERSION from the Go module proxy (about 10 minutes on 2 cores)"
  local work; work=$(mktemp -d "$CACHE/consul-src.XXXXXX")
  local src; src=$(go mod download -json "github.com/hashicorp/consul@v$CONSUL_VERSION" 2>/dev/null | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')
  cp -r "$src/." "$work/"
  chmod -R u+w "$work"
  local nested
  for nested in api@v1.31.2 envoyextensions@v0.7.3 proto-public@v0.6.2 sdk@v0.16.1 troubleshoot@v0.7.1; do
    local dir; dir=$(go mod download -json "github.com/hashicorp/consul/$nested" 2>/dev/null | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')
    rm -rf "$work/${nested%@*}"; cp -r "$dir" "$work/${nested%@*}"; chmod -R u+w "$work/${nested%@*}"
  done
  mkdir -p "$(dirname "$CONSUL_BIN")"
  (cd "$work" && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -o "$CONSUL_BIN.tmp" .)
  mv "$CONSUL_BIN.tmp" "$CONSUL_BIN"
  rm -rf "$work"
}

# consul-template is what lbctl is compared against: same template output,
# and the reload latency benchmark.
install_consul_template() {
  [ -x "$CT_BIN" ] && return 0
  log "installing consul-template v$CT_VERSION"
  GOFLAGS= GOBIN="$(dirname "$CT_BIN")" go install "github.com/hashicorp/consul-template@v$CT_VERSION" 2>/dev/null
}

mkdir -p "$CACHE"
install_debian_packages
build_consul
install_consul_template
echo "$CONSUL_BIN"
