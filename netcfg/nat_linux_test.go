package netcfg

import (
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/salvovpn/salvo/internal/netns"
)

// TestEnableNAT proves EnableNAT creates table inet salvo_<dev> with
// masquerade rules for both families in the namespace only (not the host),
// that re-applying replaces it, that undo removes it (twice is fine), and
// that CleanupStale removes a leftover table.
func TestEnableNAT(t *testing.T) {
	ns := netns.ForTest(t, nsPrefix)
	n := NAT{
		Sources:      []netip.Prefix{netip.MustParsePrefix("10.8.0.0/24"), netip.MustParsePrefix("fd08::/64")},
		OutInterface: "eth0",
		TunDev:       "stnat0",
	}
	var undo func() error
	for range 2 {
		must(t, ns.Do(func() error {
			var err error
			undo, err = EnableNAT(n)
			return err
		}))
	}
	out := run(t, ns, "nft", "list", "table", "inet", "salvo_stnat0")
	for _, want := range []string{
		"type nat hook postrouting priority srcnat",
		`ip saddr 10.8.0.0/24 oifname != "stnat0" oifname "eth0"`,
		`ip6 saddr fd08::/64 oifname != "stnat0" oifname "eth0"`,
		"masquerade",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("nft table lacks %q:\n%s", want, out)
		}
	}
	if strings.Count(out, "masquerade") != 2 {
		t.Errorf("want exactly 2 masquerade rules after re-apply:\n%s", out)
	}
	// Read-only look at the host: the table must not have leaked there.
	if err := exec.Command("nft", "list", "table", "inet", "salvo_stnat0").Run(); err == nil {
		t.Error("table inet salvo_stnat0 exists in the host namespace")
	}
	must(t, undo())
	must(t, undo())
	if out, err := ns.Run("nft", "list", "table", "inet", "salvo_stnat0"); err == nil {
		t.Errorf("table still present after undo:\n%s", out)
	}

	// A crashed run's table is found by device name alone.
	must(t, ns.Do(func() error { _, err := EnableNAT(n); return err }))
	must(t, ns.Do(func() error { return CleanupStale(RouteSetup{Dev: "stnat0"}) }))
	if out, err := ns.Run("nft", "list", "table", "inet", "salvo_stnat0"); err == nil {
		t.Errorf("table still present after CleanupStale:\n%s", out)
	}
}

// TestGatewayForwardsAndMasquerades proves EnableForwarding + EnableNAT
// together make a working gateway: a "client" namespace sends UDP through a
// "gateway" namespace to a "server" namespace, which sees the gateway's
// address as source (IPv4 and IPv6). All traffic stays inside the three
// namespaces the test created.
func TestGatewayForwardsAndMasquerades(t *testing.T) {
	cli := netns.ForTest(t, nsPrefix)
	gw := netns.ForTest(t, nsPrefix)
	srv := netns.ForTest(t, nsPrefix)
	must(t, netns.Veth(cli, "eth0", gw, "gtun0")) // stands in for the tunnel
	must(t, netns.Veth(gw, "eth1", srv, "eth0"))
	for _, a := range []struct {
		ns        *netns.NS
		dev, cidr string
	}{
		{cli, "eth0", "10.8.0.2/24"}, {cli, "eth0", "fd08::2/64"},
		{gw, "gtun0", "10.8.0.1/24"}, {gw, "gtun0", "fd08::1/64"},
		{gw, "eth1", "10.60.0.1/24"}, {gw, "eth1", "fd60::1/64"},
		{srv, "eth0", "10.60.0.2/24"}, {srv, "eth0", "fd60::2/64"},
	} {
		must(t, a.ns.AddAddr(a.dev, a.cidr))
	}
	must(t, cli.AddRoute("default", "10.8.0.1"))
	must(t, cli.AddRoute("default", "fd08::1"))
	// The server has no route back to 10.8.0.0/24: replies only work if
	// the gateway rewrote the source.
	must(t, gw.Do(func() error {
		fwdUndo, err := EnableForwarding(true, true)
		if err != nil {
			return err
		}
		t.Cleanup(func() { _ = fwdUndo() })
		natUndo, err := EnableNAT(NAT{
			Sources: []netip.Prefix{netip.MustParsePrefix("10.8.0.0/24"), netip.MustParsePrefix("fd08::/64")},
			TunDev:  "gtun0",
		})
		if err != nil {
			return err
		}
		t.Cleanup(func() { _ = natUndo() })
		return nil
	}))

	for _, tc := range []struct{ listen, dst, wantSrc string }{
		{"10.60.0.2:7000", "10.60.0.2:7000", "10.60.0.1"},
		{"[fd60::2]:7000", "[fd60::2]:7000", "fd60::1"},
	} {
		var pc net.PacketConn
		must(t, srv.Do(func() error {
			var err error
			pc, err = net.ListenPacket("udp", tc.listen)
			return err
		}))
		defer pc.Close()
		must(t, cli.Do(func() error {
			c, err := net.Dial("udp", tc.dst)
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write([]byte("hello"))
			return err
		}))
		must(t, pc.SetReadDeadline(time.Now().Add(3*time.Second)))
		buf := make([]byte, 64)
		_, from, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatalf("server %s: %v", tc.listen, err)
		}
		if got := from.(*net.UDPAddr).IP.String(); got != tc.wantSrc {
			t.Errorf("server %s saw source %s, want masqueraded %s", tc.listen, got, tc.wantSrc)
		}
	}
}

// TestEnableForwarding proves forwarding is switched on inside the
// namespace only, that undo (called from outside the namespace) restores the
// previous values, and that a value that was already 1 stays 1.
func TestEnableForwarding(t *testing.T) {
	hostV4 := readTrim(t, sysctlIPv4Forward)
	hostV6 := readTrim(t, sysctlIPv6Forward)
	ns := netns.ForTest(t, nsPrefix)
	read := func() (v4, v6 string) {
		must(t, ns.Do(func() error {
			v4, v6 = readTrim(t, sysctlIPv4Forward), readTrim(t, sysctlIPv6Forward)
			return nil
		}))
		return
	}
	if v4, v6 := read(); v4 != "0" || v6 != "0" {
		t.Fatalf("fresh namespace forwarding = %s/%s, want 0/0", v4, v6)
	}
	var undo func() error
	must(t, ns.Do(func() error {
		var err error
		undo, err = EnableForwarding(true, true)
		return err
	}))
	if v4, v6 := read(); v4 != "1" || v6 != "1" {
		t.Errorf("after EnableForwarding = %s/%s, want 1/1", v4, v6)
	}
	if readTrim(t, sysctlIPv4Forward) != hostV4 || readTrim(t, sysctlIPv6Forward) != hostV6 {
		t.Error("EnableForwarding changed the host namespace")
	}
	must(t, undo()) // from the test goroutine, outside the namespace
	must(t, undo())
	if v4, v6 := read(); v4 != "0" || v6 != "0" {
		t.Errorf("after undo = %s/%s, want 0/0", v4, v6)
	}

	must(t, ns.SetSysctl("net.ipv4.ip_forward", "1"))
	must(t, ns.Do(func() error {
		var err error
		undo, err = EnableForwarding(true, false)
		return err
	}))
	must(t, undo())
	if v4, _ := read(); v4 != "1" {
		t.Errorf("pre-set ip_forward after undo = %s, want 1 (left as found)", v4)
	}
}

// TestSetMark proves SetMark sets SO_MARK on a socket (read back with
// getsockopt) and names the fd when it fails.
func TestSetMark(t *testing.T) {
	ns := netns.ForTest(t, nsPrefix)
	must(t, ns.Do(func() error {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer pc.Close()
		raw, err := pc.(*net.UDPConn).SyscallConn()
		if err != nil {
			return err
		}
		var got int
		var serr, gerr error
		err = raw.Control(func(fd uintptr) {
			serr = SetMark(int(fd), 0x5a17)
			got, gerr = getMark(int(fd))
		})
		if err = firstErr(err, serr, gerr); err != nil {
			return err
		}
		if got != 0x5a17 {
			t.Errorf("SO_MARK = %#x, want 0x5a17", got)
		}
		return nil
	}))
	f, err := os.Open(filepath.Join(t.TempDir()))
	must(t, err)
	defer f.Close()
	if err := SetMark(int(f.Fd()), 1); err == nil || !strings.Contains(err.Error(), "fd") {
		t.Errorf("SetMark on a directory fd = %v, want an error naming the fd", err)
	}
}
