package engine

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/salvovpn/salvo/protocol/handshake"
)

// TestReloadPushesNewSettings: after Reload, a client that logs in gets the new routes and DNS, the new
// limits are in force against an attacker guessing passwords (3 failures, not the default 10, before its
// source is refused), and a session that was up stays up.
func TestReloadPushesNewSettings(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	w.startServer()
	alice := w.connect(clientOpts{})
	route := netip.MustParsePrefix("10.202.0.0/24")
	dns := netip.MustParseAddr("10.201.0.53")
	must(t, w.srv.Reload(Reloadable{Routes: []netip.Prefix{route}, DNS: []netip.Addr{dns}, MaxSessionsPerUser: 2,
		Limits: LoginLimits{HashBudget: 1000 * cheapParams.Cost(), FailureBurst: 3, FailureInterval: time.Minute}}))
	bob := w.connect(clientOpts{user: "bob"})
	got := bob.setup.history()
	if last := got[len(got)-1]; !slices.Equal(last.Routes, []netip.Prefix{route}) || !slices.Equal(last.DNS, []netip.Addr{dns}) {
		t.Fatalf("bob got %+v after the reload", last)
	}
	attacker := w.rawPeer(netip.MustParseAddrPort("198.18.7.1:4000"))
	for i := range 3 {
		if res := attacker.login(t, "bob", "guess"); res != handshake.ResultBadCredentials {
			t.Fatalf("guess %d: %v", i+1, res)
		}
	}
	if res := attacker.login(t, "bob", "guess"); res != handshake.ResultRateLimited {
		t.Fatalf("fourth guess after failed_login_burst = 3: %v, want rate limited", res)
	}
	must(t, alice.sendUp(hostV4, "still up"))

	// An invalid reload changes nothing.
	many := make([]netip.Prefix, 65)
	for i := range many {
		many[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 203, byte(i), 0}), 24)
	}
	if err := w.srv.Reload(Reloadable{Routes: many}); err == nil {
		t.Fatal("a reload with 65 routes was accepted")
	}
	if w.srv.cfg.Settings.Routes[0] != route || w.srv.logins.limits.Load().FailureBurst != 3 || w.srv.cfg.MaxSessionsPerUser != 2 {
		t.Fatal("a refused reload changed the gateway")
	}
}
