package netcfg

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/salvovpn/salvo/internal/netns"
)

func testSetup(routes, excluded []string) RouteSetup {
	rs := RouteSetup{Dev: "stun0", Table: 51820, FwMark: 0x5a17, RulePriority: 5000}
	for _, r := range routes {
		rs.Routes = append(rs.Routes, netip.MustParsePrefix(r))
	}
	for _, r := range excluded {
		rs.Excluded = append(rs.Excluded, netip.MustParsePrefix(r))
	}
	return rs
}

func applyIn(t *testing.T, ns *netns.NS, rs RouteSetup) func() error {
	t.Helper()
	var undo func() error
	must(t, ns.Do(func() error {
		var err error
		undo, err = ApplyRoutes(rs)
		return err
	}))
	return undo
}

// TestApplyRoutesSplit proves that with a split tunnel only the pushed
// prefixes go to the tunnel: an excluded sub-prefix and everything else use
// main, the LAN (more specific in main) stays on eth0, a wider main route
// (10.0.0.0/8) does not shadow the pushed 10.9.0.0/16, and undo (run from
// outside the namespace, twice) restores rules and tables exactly.
func TestApplyRoutesSplit(t *testing.T) {
	c, _ := lan(t)
	run(t, c, "ip", "route", "add", "10.0.0.0/8", "via", "10.50.0.1")
	before := routingState(t, c)

	undo := applyIn(t, c, testSetup([]string{"10.9.0.0/16", "fd09::/32"}, []string{"10.9.5.0/24"}))
	routeGet(t, c, "dev stun0", "10.9.1.1")
	routeGet(t, c, "via 10.50.0.1 dev eth0", "10.9.5.1")  // excluded
	routeGet(t, c, "via 10.50.0.1 dev eth0", "192.0.2.1") // outside
	routeGet(t, c, "via 10.50.0.1 dev eth0", "10.77.0.1") // main's /8, not pushed
	routeGet(t, c, "dev eth0", "10.50.0.9")               // LAN
	routeGet(t, c, "dev stun0", "fd09::1")
	routeGet(t, c, "via fd50::1 dev eth0", "2001:db8::1")
	routeGet(t, c, "dev eth0", "fd50::9")
	rules := run(t, c, "ip", "-4", "rule")
	for _, want := range []string{"5000:\tnot from all fwmark 0x5a17 lookup main suppress_prefixlength 16", "5001:\tnot from all fwmark 0x5a17 lookup 51820"} {
		if !strings.Contains(rules, want) {
			t.Errorf("ip rule lacks %q:\n%s", want, rules)
		}
	}

	must(t, undo())
	must(t, undo())
	if after := routingState(t, c); after != before {
		t.Errorf("undo did not restore routing.\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// TestApplyRoutesFull proves the full-tunnel layout: ordinary lookups go to
// the tunnel, lookups with the fwmark (and sockets with SO_MARK) go via
// eth0's default route, the LAN stays reachable, and undo restores state.
// Only route lookups and UDP connect() are used: nothing is sent to 1.2.3.4.
func TestApplyRoutesFull(t *testing.T) {
	c, _ := lan(t)
	before := routingState(t, c)
	undo := applyIn(t, c, testSetup([]string{"0.0.0.0/0", "::/0"}, nil))

	routeGet(t, c, "dev stun0", "1.2.3.4")
	routeGet(t, c, "via 10.50.0.1 dev eth0", "1.2.3.4", "mark", "0x5a17")
	routeGet(t, c, "dev eth0", "10.50.0.9")
	routeGet(t, c, "dev stun0", "2001:db8::1")
	routeGet(t, c, "via fd50::1 dev eth0", "2001:db8::1", "mark", "0x5a17")

	// The engine's view: a marked UDP socket picks eth0's address as source,
	// an unmarked one the tunnel's. connect() on UDP only does the lookup.
	for _, tc := range []struct {
		dst        string
		mark       bool
		wantSource string
	}{
		{"1.2.3.4:51820", true, "10.50.0.2"},
		{"1.2.3.4:51820", false, "10.8.0.2"},
		{"[2001:db8::1]:51820", true, "fd50::2"},
		{"[2001:db8::1]:51820", false, "fd08::2"},
	} {
		must(t, c.Do(func() error {
			d := net.Dialer{}
			if tc.mark {
				d.Control = MarkControl(0x5a17)
			}
			conn, err := d.Dial("udp", tc.dst)
			if err != nil {
				return err
			}
			defer conn.Close()
			if got := conn.LocalAddr().(*net.UDPAddr).IP.String(); got != tc.wantSource {
				t.Errorf("dial %s mark=%v: source %s, want %s", tc.dst, tc.mark, got, tc.wantSource)
			}
			return nil
		}))
	}

	must(t, undo())
	must(t, undo())
	if after := routingState(t, c); after != before {
		t.Errorf("undo did not restore routing.\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// TestApplyRoutesConflictAndCleanupStale proves that applying on top of a
// crashed run's leftovers fails (naming the route) without damaging them,
// and that CleanupStale removes exactly those leftovers, rules and throw
// routes included, even once the tunnel device is gone.
func TestApplyRoutesConflictAndCleanupStale(t *testing.T) {
	c, _ := lan(t)
	before := routingState(t, c)
	closeTun := openTun(t, c, "stun9")
	must(t, c.Do(func() error { return ConfigureLink("stun9", 1400, nil) }))
	rs := testSetup([]string{"0.0.0.0/0", "::/0"}, []string{"192.0.2.0/24"})
	rs.Dev = "stun9"
	_ = applyIn(t, c, rs) // "crash": never undone
	leftover := routingState(t, c)

	err := c.Do(func() error { _, err := ApplyRoutes(rs); return err })
	if err == nil || !strings.Contains(err.Error(), "0.0.0.0/0 dev stun9 table 51820") {
		t.Fatalf("second ApplyRoutes: err = %v, want a route conflict naming the route", err)
	}
	if got := routingState(t, c); got != leftover {
		t.Errorf("failed ApplyRoutes changed existing state.\nwant:\n%s\ngot:\n%s", leftover, got)
	}

	closeTun() // the crashed process's TUN disappears with its routes
	// A foreign rule at the same priority must survive the cleanup.
	run(t, c, "ip", "rule", "add", "prio", "5000", "from", "10.50.0.0/24", "lookup", "main")
	must(t, c.Do(func() error { return CleanupStale(rs) }))
	run(t, c, "ip", "rule", "del", "prio", "5000", "from", "10.50.0.0/24", "lookup", "main")
	if after := routingState(t, c); after != before {
		t.Errorf("CleanupStale left state behind.\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// TestCleanupStaleTwoInstances proves that two client instances in one
// namespace (own device, table and fwmark, same rule priority) can both
// apply their routes, and that CleanupStale for one, after it "crashed"
// (applied, never undone), removes exactly its own rules and routes: the
// other's stay as they were, and its undo then restores the original state.
func TestCleanupStaleTwoInstances(t *testing.T) {
	c, _ := lan(t)
	openTun(t, c, "stun1")
	must(t, c.Do(func() error { return ConfigureLink("stun1", 1400, nil) }))
	before := routingState(t, c)
	second := testSetup([]string{"0.0.0.0/0", "::/0"}, []string{"192.0.2.0/24"})
	second.Dev, second.Table, second.FwMark = "stun1", 51821, 0x5a18
	undoSecond := applyIn(t, c, second)
	onlySecond := routingState(t, c)

	crashed := testSetup([]string{"10.9.0.0/16", "fd09::/32"}, []string{"10.9.5.0/24"})
	_ = applyIn(t, c, crashed) // never undone
	if routingState(t, c) == onlySecond {
		t.Fatal("second ApplyRoutes changed nothing")
	}
	must(t, c.Do(func() error { return CleanupStale(crashed) }))
	if got := routingState(t, c); got != onlySecond {
		t.Errorf("CleanupStale of one instance did not leave exactly the other's state.\nwant:\n%s\ngot:\n%s", onlySecond, got)
	}
	must(t, undoSecond())
	if got := routingState(t, c); got != before {
		t.Errorf("undo of the remaining instance did not restore routing.\nbefore:\n%s\nafter:\n%s", before, got)
	}
}

// TestApplyRoutesValidation proves bad setups are refused before anything
// is touched, with the offending value in the error.
func TestApplyRoutesValidation(t *testing.T) {
	ns := netns.ForTest(t, nsPrefix) // in case a check regresses: never the host
	for _, tc := range []struct {
		rs   RouteSetup
		want string
	}{
		{RouteSetup{Table: 1, FwMark: 1, RulePriority: 1}, "empty device"},
		{RouteSetup{Dev: "t", Table: 254, FwMark: 1, RulePriority: 1}, "table 254"},
		{RouteSetup{Dev: "t", Table: 100, RulePriority: 1}, "fwmark"},
		{RouteSetup{Dev: "t", Table: 100, FwMark: 1, RulePriority: 32765}, "priority 32765"},
		{RouteSetup{Dev: "t", Table: 100, FwMark: 1, RulePriority: 10, Routes: []netip.Prefix{{}}}, "invalid prefix"},
	} {
		err := ns.Do(func() error { _, err := ApplyRoutes(tc.rs); return err })
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ApplyRoutes(%+v) = %v, want error containing %q", tc.rs, err, tc.want)
		}
	}
}
