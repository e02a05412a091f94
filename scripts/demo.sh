#!/usr/bin/env bash
# make demo: a gateway, a client and a host behind the gateway, each in its own network namespace.
# Shows the session coming up, pings through the tunnel, runs a 5 s iperf3 through it, then removes
# everything (also on Ctrl-C or failure).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "make demo needs root (network namespaces, TUN)"; exit 1; }
./scripts/deps.sh # also run by `make demo`; here too so the script works on its own
BIN=$PWD/bin/salvo
id=$$
C=salvo-demo-c-$id G=salvo-demo-g-$id H=salvo-demo-h-$id
work=$(mktemp -d)
pids=()
cleanup() {
  set +e
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  for n in $C $G $H; do ip netns del "$n" 2>/dev/null; done
  rm -rf "$work"
  echo "== cleaned up: namespaces and processes removed"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== topology: client ($C) <-> gateway ($G) <-> host ($H)"
for n in $C $G $H; do ip netns add "$n"; ip -n "$n" link set lo up; done
ip link add dc type veth peer name dg
ip link set dc netns $C; ip link set dg netns $G
ip link add dh type veth peer name dgh
ip link set dh netns $H; ip link set dgh netns $G
ip -n $C addr add 10.200.0.1/24 dev dc; ip -n $C link set dc up
ip -n $G addr add 10.200.0.2/24 dev dg; ip -n $G link set dg up
ip -n $G addr add 10.201.0.1/24 dev dgh; ip -n $G link set dgh up
ip -n $H addr add 10.201.0.2/24 dev dh; ip -n $H link set dh up

echo "== keys, users and configs in $work"
$BIN keygen --out $work/server.key > $work/server.pub
echo demo-password | $BIN user add --file $work/users --password-stdin demo 2>/dev/null
echo demo-password > $work/demo.pass; chmod 600 $work/demo.pass
cat > $work/server.toml <<EOT
listen = ["10.200.0.2:51820"]
private_key_file = "server.key"
users_file = "users"
tun_name = "salvo0"
ipv4_pool = "10.77.0.0/24"
routes = ["10.201.0.0/24"]
nat = true
control_socket = "$work/server.sock"
state_dir = "$work/state"
EOT
cat > $work/client.toml <<EOT
server = "10.200.0.2:51820"
server_public_key = "$(cat $work/server.pub)"
username = "demo"
password_file = "demo.pass"
tun_name = "salvo1"
control_socket = "$work/client.sock"
EOT

echo "== starting gateway and client"
ip netns exec $G $BIN server --config $work/server.toml 2> >(sed 's/^/[gateway] /') & pids+=($!)
for _ in $(seq 50); do [ -S $work/server.sock ] && break; sleep 0.1; done
ip netns exec $C $BIN client --config $work/client.toml 2> >(sed 's/^/[client]  /') & pids+=($!)
for _ in $(seq 100); do
  ip netns exec $C $BIN status --socket $work/client.sock --json 2>/dev/null | grep -q '"state": "connected"' && break
  sleep 0.1
done
ip netns exec $G $BIN status --socket $work/server.sock

echo "== ping through the tunnel: client -> host behind the gateway (NAT)"
ip netns exec $C ping -c 3 -i 0.2 10.201.0.2

echo "== iperf3, 5 s, client -> host through the tunnel"
ip netns exec $H iperf3 -s -1 -D >/dev/null
sleep 0.3
ip netns exec $C iperf3 -c 10.201.0.2 -t 5 -f m | grep -E 'sender|receiver'

echo "== gateway status after the transfer"
ip netns exec $G $BIN status --socket $work/server.sock
