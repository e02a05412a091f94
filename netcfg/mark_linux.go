package netcfg

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// SetMark sets SO_MARK on a socket so its packets match "fwmark mark" in the
// routing rules installed by ApplyRoutes and bypass the tunnel table. Needs
// CAP_NET_ADMIN.
func SetMark(fd int, mark uint32) error {
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, int(mark)); err != nil {
		return fmt.Errorf("netcfg: set SO_MARK %#x on socket fd %d: %w", mark, fd, err)
	}
	return nil
}

// MarkControl returns a net.ListenConfig/net.Dialer Control function that
// marks the socket before it is bound, so even the first packet is marked.
func MarkControl(mark uint32) func(network, address string, c syscall.RawConn) error {
	return func(network, address string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) { serr = SetMark(int(fd), mark) }); err != nil {
			return fmt.Errorf("netcfg: mark %s socket for %s: %w", network, address, err)
		}
		return serr
	}
}
