// Package offload owns the TUN device side of the data plane: opening the device with or without the
// virtio-net header (TSO/USO on read, GRO on write) and the checksum helpers that go with it.
package offload

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"
)

// Options selects the kernel offloads of a TUN device.
type Options struct {
	// VNetHdr opens the device with IFF_VNET_HDR so the kernel hands over TSO/USO super-packets and accepts
	// GRO-coalesced writes. wireguard-go's tun package splits and coalesces them; reads and writes then move
	// vectors of up to 128 packets per call. Off gives one packet per read: the fallback and a test switch.
	VNetHdr bool
}

// Open creates (or attaches to) the TUN device name with the given MTU. The returned device reads and writes
// packets at an offset: callers keep protocol.Headroom bytes in front of each packet (the wireguard tun code
// needs 10 of them for the virtio header, Salvo needs 16 for its data header).
func Open(name string, mtu int, opt Options) (tun.Device, error) {
	if opt.VNetHdr {
		dev, err := tun.CreateTUN(name, mtu)
		if err != nil {
			return nil, fmt.Errorf("create tun %q: %w", name, err)
		}
		return dev, nil
	}
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun name %q: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("create tun %q: %w", name, err)
	}
	// Non-blocking before os.NewFile so the runtime poller owns the descriptor.
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	dev, err := tun.CreateTUNFromFile(os.NewFile(uintptr(fd), "/dev/net/tun"), mtu)
	if err != nil {
		return nil, fmt.Errorf("create tun %q: %w", name, err)
	}
	return dev, nil
}
