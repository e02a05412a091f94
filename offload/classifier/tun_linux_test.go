package classifier

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/salvovpn/salvo/internal/netns"
)

const virtioNetHdrLen = 10 // struct virtio_net_hdr, in front of every packet read with IFF_VNET_HDR

// openTUNQueues creates a multi-queue TUN device with IFF_VNET_HDR inside ns and opens n queues on it.
// The fds are non-blocking so that os.File reads honour deadlines.
func openTUNQueues(t *testing.T, ns *netns.NS, name string, n int) []*os.File {
	t.Helper()
	var files []*os.File
	err := ns.Do(func() error {
		for range n {
			fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
			if err != nil {
				return err
			}
			ifr, err := unix.NewIfreq(name)
			if err != nil {
				unix.Close(fd)
				return err
			}
			ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_MULTI_QUEUE | unix.IFF_VNET_HDR)
			if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
				unix.Close(fd)
				return fmt.Errorf("TUNSETIFF: %w", err)
			}
			files = append(files, os.NewFile(uintptr(fd), name))
		}
		return nil
	})
	t.Cleanup(func() {
		for _, f := range files {
			f.Close()
		}
	})
	if err != nil {
		t.Fatalf("open TUN queues: %v", err)
	}
	return files
}

// readDst reads queue q until a packet to dst arrives (other traffic such as IPv6 router solicitations
// is skipped) or the deadline passes. The program saw the packet at offset 0 although the read shows a
// virtio-net header in front of it: the header is only added on the way to user space.
func readDst(f *os.File, dst netip.Addr, d time.Duration) bool {
	buf := make([]byte, 65536)
	f.SetReadDeadline(time.Now().Add(d))
	for {
		n, err := f.Read(buf)
		if err != nil {
			return false
		}
		p := buf[virtioNetHdrLen:n]
		if len(p) < 1 {
			continue
		}
		var got netip.Addr
		switch p[0] >> 4 {
		case 4:
			if len(p) >= 20 {
				got = netip.AddrFrom4([4]byte(p[16:20]))
			}
		case 6:
			if len(p) >= 40 {
				got = netip.AddrFrom16([16]byte(p[24:40]))
			}
		}
		if got == dst {
			return true
		}
	}
}

func TestTUNSteeringNamespace(t *testing.T) {
	c := loadForTest(t, Config{Sockets: 2, TUNSteering: true})
	ns := netns.ForTest(t, "salvo-bpf-")
	const dev = "salvotun0"
	queues := openTUNQueues(t, ns, dev, 2)
	for _, cidr := range []string{"10.99.0.1/24", "fd99::1/64"} {
		if err := ns.AddAddr(dev, cidr); err != nil {
			t.Fatal(err)
		}
	}
	if err := ns.LinkUp(dev); err != nil {
		t.Fatal(err)
	}
	rc, err := queues[0].SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.AttachTUN(rc); err != nil {
		t.Fatalf("AttachTUN: %v", err)
	}
	// Clients' tunnel addresses, alternating owners; the /24 and /64 catch the rest for queue 0.
	want := map[netip.Addr]uint32{}
	for i := 2; i < 10; i++ {
		want[netip.MustParseAddr(fmt.Sprintf("10.99.0.%d", i))] = uint32(i % 2)
		want[netip.MustParseAddr(fmt.Sprintf("fd99::%d", i))] = uint32(i % 2)
	}
	for a, q := range want {
		if err := c.SetRoute(netip.PrefixFrom(a, a.BitLen()), q); err != nil {
			t.Fatal(err)
		}
	}
	var s4, s6 *net.UDPConn
	if err := ns.Do(func() error {
		var err error
		if s4, err = net.ListenUDP("udp4", nil); err != nil {
			return err
		}
		s6, err = net.ListenUDP("udp6", nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer s4.Close()
	defer s6.Close()
	check := func(label string, flip uint32) {
		t.Helper()
		for a, q := range want {
			if err := c.SetRoute(netip.PrefixFrom(a, a.BitLen()), q^flip); err != nil {
				t.Fatal(err)
			}
		}
		for a, q := range want {
			s := s4
			if a.Is6() {
				s = s6
			}
			if _, err := s.WriteToUDPAddrPort([]byte("steer me"), netip.AddrPortFrom(a, 9)); err != nil {
				t.Fatalf("send to %s: %v", a, err)
			}
			if !readDst(queues[q^flip], a, time.Second) {
				t.Errorf("%s: packet to %s did not arrive on queue %d", label, a, q^flip)
			}
		}
	}
	// The same 16 flows follow the route map when it changes: the program, not the kernel's flow
	// hash, picks the queue (a coincidence would be 2^-32).
	check("routes", 0)
	check("flipped routes", 1)
	ids := progIDs(t, c)
	if err := c.Close(); err != nil {
		t.Fatalf("Close (TUNSETSTEERINGEBPF -1): %v", err)
	}
	waitProgsGone(t, ids)
}
