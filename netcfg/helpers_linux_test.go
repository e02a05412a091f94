package netcfg

import (
	"net/netip"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/salvovpn/salvo/internal/netns"
)

const nsPrefix = "salvo-t-"

// lan builds the client side of the tests: namespace c with eth0
// (10.50.0.2/24, fd50::2/64) whose default routes go to the peer namespace
// (10.50.0.1, fd50::1), plus a dummy "tunnel" device stun0 configured with
// 10.8.0.2/24 and fd08::2/64. Everything is torn down by t.Cleanup.
func lan(t *testing.T) (c, peer *netns.NS) {
	t.Helper()
	c, peer, _ = lanTun(t)
	return c, peer
}

// lanTun is lan that also returns stun0's TUN file (non-blocking, so reads
// take deadlines): what is read from it is what the namespace sent into the
// tunnel.
func lanTun(t *testing.T) (c, peer *netns.NS, tun *os.File) {
	t.Helper()
	c = netns.ForTest(t, nsPrefix)
	peer = netns.ForTest(t, nsPrefix)
	must(t, netns.Veth(c, "eth0", peer, "eth0"))
	must(t, c.AddAddr("eth0", "10.50.0.2/24"))
	must(t, c.AddAddr("eth0", "fd50::2/64"))
	must(t, peer.AddAddr("eth0", "10.50.0.1/24"))
	must(t, peer.AddAddr("eth0", "fd50::1/64"))
	must(t, c.AddRoute("default", "10.50.0.1"))
	must(t, c.AddRoute("default", "fd50::1"))
	tun = openTunFile(t, c, "stun0")
	must(t, c.Do(func() error {
		return ConfigureLink("stun0", 1400, []netip.Prefix{
			netip.MustParsePrefix("10.8.0.2/24"), netip.MustParsePrefix("fd08::2/64"),
		})
	}))
	return c, peer, tun
}

// openTun creates a TUN device inside ns the way the engine does (open
// /dev/net/tun + TUNSETIFF on a thread in the namespace) and keeps the fd
// open until cleanup (or until the returned func closes it, which deletes
// the device as when a tunnel process dies), so the link has carrier.
func openTun(t *testing.T, ns *netns.NS, name string) (closeTun func()) {
	t.Helper()
	f := openTunFile(t, ns, name)
	return func() { f.Close() }
}

// openTunFile is openTun returning the TUN's file, non-blocking so that
// reads can have deadlines. Cleanup closes it.
func openTunFile(t *testing.T, ns *netns.NS, name string) *os.File {
	t.Helper()
	var f *os.File
	must(t, ns.Do(func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return err
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			unix.Close(fd)
			return err
		}
		ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return err
		}
		f = os.NewFile(uintptr(fd), "tun-"+name)
		return nil
	}))
	t.Cleanup(func() { f.Close() })
	return f
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func run(t *testing.T, ns *netns.NS, cmd ...string) string {
	t.Helper()
	out, err := ns.Run(cmd...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// routeGet runs `ip route get` (a lookup only; nothing is sent) and checks
// the result contains want.
func routeGet(t *testing.T, ns *netns.NS, want string, args ...string) {
	t.Helper()
	out := run(t, ns, append([]string{"ip", "route", "get"}, args...)...)
	if !strings.Contains(out, want) {
		t.Errorf("ip route get %s = %q, want %q", strings.Join(args, " "), strings.TrimSpace(out), want)
	}
}

// routingState is everything ApplyRoutes/CleanupStale may touch.
func routingState(t *testing.T, ns *netns.NS) string {
	t.Helper()
	return run(t, ns, "ip", "-4", "rule") + run(t, ns, "ip", "-6", "rule") +
		run(t, ns, "ip", "-4", "route", "show", "table", "all") +
		run(t, ns, "ip", "-6", "route", "show", "table", "all")
}

func readTrim(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func getMark(fd int) (int, error) {
	return unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK)
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}
