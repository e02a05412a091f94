#!/usr/bin/env bash
# Installs what `make test`, `make demo` and `make bench` run on a fresh Debian machine, and nothing that is
# already there. Needs root (apt-get) only when something is missing.
set -euo pipefail
export PATH=$PATH:/usr/local/go/bin:/usr/sbin:/sbin
need=()
have() { command -v "$1" >/dev/null 2>&1; }
have ip || need+=(iproute2)             # namespaces, veth, addresses
have ping || need+=(iputils-ping)       # e2e and demo pings
have nft || need+=(nftables)            # netcfg and e2e check the NAT tables
have iperf3 || need+=(iperf3)           # demo, bench and its harness test
have wg || need+=(wireguard-tools)      # bench: the wireguard-go side
have openvpn || need+=(openvpn)         # bench: the OpenVPN 2.6 side
have unshare || need+=(util-linux)      # setpriv/unshare in e2e
# The PostgreSQL server for the store tests (internal/pgtest runs it as the postgres account, on a socket).
have pg_ctl || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
