package netcfg

import (
	"errors"
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

var stnat0Rules = []string{
	`ip saddr 10.8.0.0/24 oifname != "stnat0" oifname "eth0"`,
	`ip6 saddr fd08::/64 oifname != "stnat0" oifname "eth0"`,
}

// TestEnableNAT proves EnableNAT creates table inet salvo_<dev>, owned by
// the process ("flags owner"), with masquerade rules for both families in
// the namespace only (not the host); that while it is held a second
// EnableNAT for the same device fails naming the table and the reason and
// leaves the table intact, as does an attempt to delete it from outside or
// CleanupStale; and that undo removes it (twice is fine), after which the
// device can be used again.
func TestEnableNAT(t *testing.T) {
	ns := netns.ForTest(t, nsPrefix)
	n := NAT{
		Sources:      []netip.Prefix{netip.MustParsePrefix("10.8.0.0/24"), netip.MustParsePrefix("fd08::/64")},
		OutInterface: "eth0",
		TunDev:       "stnat0",
	}
	undo := enableNATIn(t, ns, n)
	t.Cleanup(func() { _ = undo() })
	wantNATTable(t, ns, "salvo_stnat0", stnat0Rules...)
	// Read-only look at the host: the table must not have leaked there.
	if err := exec.Command("nft", "list", "table", "inet", "salvo_stnat0").Run(); err == nil {
		t.Error("table inet salvo_stnat0 exists in the host namespace")
	}

	err := ns.Do(func() error { _, err := EnableNAT(n); return err })
	var owned *TableOwnedError
	if !errors.As(err, &owned) || !strings.Contains(err.Error(), "inet salvo_stnat0") ||
		!strings.Contains(err.Error(), "another running Salvo gateway") {
		t.Errorf("second EnableNAT: err = %v, want a *TableOwnedError naming inet salvo_stnat0 and its owner", err)
	}
	if out, err := ns.Run("nft", "delete", "table", "inet", "salvo_stnat0"); err == nil {
		t.Errorf("nft could delete the owned table: %s", out)
	}
	must(t, ns.Do(func() error { return CleanupStale(RouteSetup{Dev: "stnat0"}) }))
	wantNATTable(t, ns, "salvo_stnat0", stnat0Rules...)

	must(t, undo())
	must(t, undo())
	if out, err := ns.Run("nft", "list", "table", "inet", "salvo_stnat0"); err == nil {
		t.Errorf("table still present after undo:\n%s", out)
	}
	must(t, enableNATIn(t, ns, n)())
}

// TestEnableNATReplacesStaleTable proves that a table of the same name
// without the owner flag (what an older Salvo that crashed leaves) is
// replaced by an owned one with nothing of the old content left.
func TestEnableNATReplacesStaleTable(t *testing.T) {
	ns := netns.ForTest(t, nsPrefix)
	run(t, ns, "nft", "add table inet salvo_stnat1; add chain inet salvo_stnat1 postrouting "+
		"{ type nat hook postrouting priority srcnat; }; add rule inet salvo_stnat1 postrouting counter comment \"stale\"")
	undo := enableNATIn(t, ns, NAT{Sources: []netip.Prefix{netip.MustParsePrefix("10.8.0.0/24")}, TunDev: "stnat1"})
	t.Cleanup(func() { _ = undo() })
	out := wantNATTable(t, ns, "salvo_stnat1", `ip saddr 10.8.0.0/24 oifname != "stnat1" counter packets 0 bytes 0 masquerade`)
	if strings.Contains(out, "stale") {
		t.Errorf("old table content survived:\n%s", out)
	}
	must(t, undo())
	if out, err := ns.Run("nft", "list", "tables"); err != nil || strings.Contains(out, "salvo_stnat1") {
		t.Errorf("after undo: nft list tables = %q, %v", out, err)
	}
}

// TestEnableNATDiesWithProcess proves that the table of a gateway killed by
// SIGKILL (a child process here) disappears by itself, and that the device
// can then be used again; while the child lives, it cannot.
func TestEnableNATDiesWithProcess(t *testing.T) {
	ns := netns.ForTest(t, nsPrefix)
	h := startHelper(t, ns, "nat", "stnat2")
	wantNATTable(t, ns, "salvo_stnat2", `ip saddr 10.8.0.0/24 oifname != "stnat2"`)
	n := NAT{Sources: []netip.Prefix{netip.MustParsePrefix("10.9.0.0/24")}, TunDev: "stnat2"}
	if err := ns.Do(func() error { _, err := EnableNAT(n); return err }); err == nil {
		t.Fatal("EnableNAT succeeded while the helper owns the table")
	}
	h.kill()
	gone := eventually(func() bool {
		out, err := ns.Run("nft", "list", "tables")
		return err == nil && !strings.Contains(out, "salvo_stnat2")
	})
	if !gone {
		t.Fatalf("table of the killed helper still there:\n%s", run(t, ns, "nft", "list", "ruleset"))
	}
	must(t, enableNATIn(t, ns, n)())
}

func enableNATIn(t *testing.T, ns *netns.NS, n NAT) (undo func() error) {
	t.Helper()
	must(t, ns.Do(func() error {
		var err error
		undo, err = EnableNAT(n)
		return err
	}))
	return undo
}

// wantNATTable checks that table inet name exists in ns with the owner flag
// and the postrouting NAT chain, holding exactly one masquerade rule per
// entry of rules, each entry found in the listing; it returns the listing.
func wantNATTable(t *testing.T, ns *netns.NS, name string, rules ...string) string {
	t.Helper()
	out := run(t, ns, "nft", "list", "table", "inet", name)
	for _, want := range append([]string{"flags owner", "type nat hook postrouting priority srcnat"}, rules...) {
		if !strings.Contains(out, want) {
			t.Errorf("table inet %s lacks %q:\n%s", name, want, out)
		}
	}
	if got := strings.Count(out, "masquerade"); got != len(rules) {
		t.Errorf("table inet %s has %d masquerade rules, want %d:\n%s", name, got, len(rules), out)
	}
	return out
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
		fwdUndo, err := EnableForwarding(t.TempDir(), true, true)
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
