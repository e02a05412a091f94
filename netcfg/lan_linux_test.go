package netcfg

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/salvovpn/salvo/internal/netns"
)

// TestLANPrefixes proves LANPrefixes masks every address of every interface
// to its network (two IPv4 networks on one link, another on a second link,
// an IPv6 /64), reports the kernel's link-local addresses once as
// fe80::/64, and leaves out loopback and the excluded tunnel device; and
// that without link-local addresses fe80::/64 is not reported.
func TestLANPrefixes(t *testing.T) {
	c, peer := lan(t) // c: eth0 10.50.0.2/24 fd50::2/64, stun0 10.8.0.2/24 fd08::2/64
	must(t, c.AddAddr("eth0", "192.168.1.37/24"))
	must(t, c.AddAddr("eth0", "172.20.3.4/12"))
	must(t, netns.Veth(c, "eth1", peer, "eth1"))
	must(t, c.AddAddr("eth1", "192.168.7.1/24"))
	want := []string{"10.50.0.0/24", "172.16.0.0/12", "192.168.1.0/24", "192.168.7.0/24", "fd50::/64", "fe80::/64"}
	var got []netip.Prefix
	ok := eventually(func() bool { // link-local addresses come with the link up, a moment later
		must(t, c.Do(func() error {
			var err error
			got, err = LANPrefixes("stun0")
			return err
		}))
		return slices.Equal(prefixStrings(got), want)
	})
	if !ok {
		t.Fatalf("LANPrefixes(stun0) = %v, want %v", got, want)
	}

	run(t, c, "ip", "-6", "addr", "flush", "scope", "link")
	must(t, c.Do(func() error {
		var err error
		got, err = LANPrefixes("stun0", "eth1")
		return err
	}))
	if want := []string{"10.50.0.0/24", "172.16.0.0/12", "192.168.1.0/24", "fd50::/64"}; !slices.Equal(prefixStrings(got), want) {
		t.Errorf("LANPrefixes(stun0, eth1) without link-local addresses = %v, want %v", got, want)
	}
}

func prefixStrings(ps []netip.Prefix) []string {
	var s []string
	for _, p := range ps {
		s = append(s, p.String())
	}
	return s
}

// TestPathMTU proves PathMTU follows the route the kernel picks for the
// mark: over a veth with MTU 1400, unmarked packets take the default route
// (the device MTU, 1400), marked ones a policy-routed table whose route has
// mtu 1300; for IPv6 a lowered per-device IPv6 MTU counts; each answer
// matches what a connected, marked UDP socket reports (IP_MTU/IPV6_MTU,
// the kernel's own figure); and a destination without route is an error
// naming it.
func TestPathMTU(t *testing.T) {
	c, _ := lan(t)
	run(t, c, "ip", "link", "set", "eth0", "mtu", "1400")
	run(t, c, "ip", "-4", "route", "add", "192.0.2.0/24", "via", "10.50.0.1", "mtu", "1300", "table", "100")
	run(t, c, "ip", "-6", "route", "add", "2001:db8::/32", "via", "fd50::1", "mtu", "1300", "table", "100")
	run(t, c, "ip", "-4", "rule", "add", "fwmark", "0x77", "lookup", "100")
	run(t, c, "ip", "-6", "rule", "add", "fwmark", "0x77", "lookup", "100")
	run(t, c, "ip", "route", "add", "unreachable", "198.51.100.0/24")

	check := func(dst string, mark uint32, want int) {
		t.Helper()
		a := netip.MustParseAddr(dst)
		var got, kernel int
		must(t, c.Do(func() error {
			var err error
			if got, err = PathMTU(a, mark); err != nil {
				return err
			}
			kernel, err = socketMTU(a, mark)
			return err
		}))
		if got != want || kernel != want {
			t.Errorf("PathMTU(%s, %#x) = %d, kernel's socket says %d; want %d", dst, mark, got, kernel, want)
		}
	}
	check("192.0.2.1", 0, 1400)
	check("192.0.2.1", 0x77, 1300)
	check("2001:db8::1", 0, 1400)
	check("2001:db8::1", 0x77, 1300)
	check("::ffff:192.0.2.1", 0x77, 1300)
	must(t, c.SetSysctl("net.ipv6.conf.eth0.mtu", "1350"))
	check("2001:db8::1", 0, 1350)
	check("2001:db8::1", 0x77, 1300)

	err := c.Do(func() error { _, err := PathMTU(netip.MustParseAddr("198.51.100.1"), 0); return err })
	if err == nil || !strings.Contains(err.Error(), "198.51.100.1") {
		t.Errorf("PathMTU to an unreachable destination = %v, want an error naming it", err)
	}
}

// socketMTU asks the kernel for its path MTU the way an application would:
// connect a UDP socket with the mark (no packet is sent) and read IP_MTU.
func socketMTU(dst netip.Addr, mark uint32) (int, error) {
	d := net.Dialer{Control: MarkControl(mark)}
	conn, err := d.Dial("udp", netip.AddrPortFrom(dst.Unmap(), 9).String())
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	raw, err := conn.(*net.UDPConn).SyscallConn()
	if err != nil {
		return 0, err
	}
	var mtu int
	var serr error
	err = raw.Control(func(fd uintptr) {
		if dst.Unmap().Is4() {
			mtu, serr = unix.GetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU)
		} else {
			mtu, serr = unix.GetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_MTU)
		}
	})
	return mtu, firstErr(err, serr)
}
