package daemon

import (
	"errors"
	"fmt"
	"syscall"
)

// needsNetAdmin adds what to do to an "operation not permitted" from the kernel: every such refusal on
// the way up (creating the TUN device, addresses, routes, rules, nftables, sysctls) is a missing
// CAP_NET_ADMIN (or CAP_BPF for ebpf = "on"). A file the process may not read is EACCES and keeps its own
// message.
func needsNetAdmin(err error) error {
	if err == nil || !errors.Is(err, syscall.EPERM) {
		return err
	}
	return fmt.Errorf("%w: needs CAP_NET_ADMIN (and CAP_BPF for ebpf = \"on\"): run as root or with those capabilities (README: Install as a service)", err)
}
