package engine

import (
	"net/netip"
	"testing"
	"time"

	"github.com/salvovpn/salvo/engine/leasing"
	"github.com/salvovpn/salvo/engine/leasing/leasingtest"
	"github.com/salvovpn/salvo/engine/tickets"
	"github.com/salvovpn/salvo/protocol/handshake"
)

// sharedWorld is a world whose gateway keeps its leases in st. The test stands in for the other gateways:
// what they would claim, it claims in st directly.
func sharedWorld(t *testing.T, st *leasingtest.Memory) *world {
	ring, err := tickets.Load("", nil) // one ticket key for every gateway of the test
	must(t, err)
	return newWorld(t, func(c *ServerConfig) {
		c.SharedLeases = st
		c.Tickets = ring
		c.sharedLeaseRenewEvery = 50 * time.Millisecond
	})
}

// TestSharedLeaseHeldElsewhere: an address that another gateway's client holds is never given out here,
// even when this gateway learns of it only when the store refuses it; the client gets the next one, and the
// store has it as the client's.
func TestSharedLeaseHeldElsewhere(t *testing.T) {
	t.Parallel()
	st := leasingtest.NewMemory()
	w := sharedWorld(t, st)
	w.startServer()
	waitUntil(t, 5*time.Second, "the first renewal", func() bool { return st.Renews() > 0 })
	carol := leasing.Lease{Login: "carol", Instance: 9, IPv4: netip.MustParseAddr("10.77.0.2"), IPv6: netip.MustParseAddr("fd77::2")}
	must(t, st.Claim(t.Context(), carol, time.Minute))

	c := w.connect(clientOpts{})
	v4, v6 := c.addrs()
	if v4 == carol.IPv4 || v6 == carol.IPv6 {
		t.Fatalf("alice got %v %v, which carol holds on another gateway", v4, v6)
	}
	for _, a := range []netip.Addr{v4, v6} {
		if l, ok := st.HeldBy(a); !ok || l.Login != "alice" {
			t.Fatalf("the store has %v as %+v (held: %v), want alice's", a, l, ok)
		}
	}
	must(t, c.sendUp(hostV4, "up"))

	// alice says goodbye: her address need not wait for the hold to run out.
	mine, _ := st.HeldBy(v4)
	c.stop()
	_ = c.exit(5 * time.Second)
	waitUntil(t, 5*time.Second, "alice's lease released", func() bool { _, held := st.HeldBy(v4); return !held })
	if l, ok, _ := st.Lookup(t.Context(), "alice", mine.Instance); !ok || l.IPv4 != v4 {
		t.Fatalf("alice's lease after her goodbye: %+v %v; want it still hers, unheld", l, ok)
	}
}

// TestSharedLeaseFollowsClient: the store's addresses for a client instance win over what its ticket says:
// another gateway gave it new ones since (its pools differ). After a restart with no lease state the client
// comes back with the store's addresses, and the renewal keeps them held while the session lives.
func TestSharedLeaseFollowsClient(t *testing.T) {
	t.Parallel()
	st := leasingtest.NewMemory()
	w := sharedWorld(t, st)
	w.startServer()
	c := w.connect(clientOpts{})
	v4, _ := c.addrs()
	mine, ok := st.HeldBy(v4)
	if !ok {
		t.Fatalf("alice's %v is not in the store", v4)
	}
	w.crashServer()
	moved := mine
	moved.IPv4, moved.IPv6 = netip.MustParseAddr("10.77.0.50"), netip.MustParseAddr("fd77::50")
	must(t, st.Claim(t.Context(), moved, -time.Second)) // given by a gateway that is gone: held no more
	w.stateDir = t.TempDir()
	w.startServer()
	waitUntil(t, 30*time.Second, "alice back", func() bool { c.poke(); return c.sendUp(hostV4, "back") == nil })
	if a4, a6 := c.addrs(); a4 != moved.IPv4 || a6 != moved.IPv6 {
		t.Fatalf("alice has %v %v, the store says %v %v", a4, a6, moved.IPv4, moved.IPv6)
	}
	if st := w.srv.Logins(); st.TicketLogins != 1 || st.PasswordHashes != 0 {
		t.Fatalf("logins: %+v", st)
	}
	waitUntil(t, 5*time.Second, "the lease held again by the renewal", func() bool {
		l, ok := st.HeldBy(moved.IPv4)
		return ok && l.Login == "alice"
	})
}

// TestSharedLeaseStoreDown: while the lease store is down, established sessions carry on and a new login
// is refused "store unavailable" (the gateway cannot know which addresses are free), not "no address"; once
// the store is back, logins work again.
func TestSharedLeaseStoreDown(t *testing.T) {
	t.Parallel()
	st := leasingtest.NewMemory()
	w := sharedWorld(t, st)
	w.startServer()
	c := w.connect(clientOpts{})
	st.SetDown(true)
	p := w.rawPeer(netip.MustParseAddrPort("198.51.100.200:4000"))
	if res := p.login(t, "bob", testPassword); res != handshake.ResultUnavailable {
		t.Fatalf("login while the store is down: %v", res)
	}
	must(t, c.sendUp(hostV4, "still up"))
	must(t, c.sendDown(hostV4, "still down"))
	if n := w.srv.Logins().Unavailable; n != 1 {
		t.Fatalf("%d logins counted as store unavailable", n)
	}
	st.SetDown(false)
	if res := p.login(t, "bob", testPassword); res != handshake.ResultOK {
		t.Fatalf("login after the store came back: %v", res)
	}
}
