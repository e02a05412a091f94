// Package daemon is Salvo's composition root on Linux: it turns a configuration (package config) into a
// running gateway or client of package engine, with batched UDP sockets (batch), TUN queues (offload),
// the eBPF classifier (offload/classifier) and the host's routes, NAT, DNS and leak guard (netcfg), and
// removes what it set up when the run ends. Environment switches are read in one place (readSwitches).
package daemon
