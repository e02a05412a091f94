// Package netns creates and drives throw-away Linux network namespaces for
// Salvo's tests, the demo and the benchmark harness.
//
// Everything here is deliberately built on the `ip` tool (iproute2) except
// Do, which switches an OS thread into the namespace so that Go code (netlink,
// nftables, sockets) can run inside it. Namespaces are named
// "<prefix><pid>-<random>" so that concurrent runs never collide and Sweep can
// tell a crashed run's leftovers (pid no longer alive) from a live one's.
package netns
