// Package bench is Salvo's system benchmark: it measures the bare veth link,
// wireguard-go, OpenVPN 2.6 and Salvo on the same two-namespace topology in
// one run, so every figure can be read as a ratio to the reference data
// planes (wireguard-go, OpenVPN) and to the ceiling (the link itself).
//
// Everything runs inside throw-away network namespaces named
// "salvo-bench-<pid>-<random>" (see internal/netns); nothing is sent on the
// host's interfaces. The command is bench/cmd/salvobench; harness_test.go runs
// a short version so the harness cannot rot.
//
// Numbers are never cached or defaulted: a system that does not come up, or a
// measurement that produces nothing, makes that system FAILED with the
// reason, and the command exits non-zero.
package bench
