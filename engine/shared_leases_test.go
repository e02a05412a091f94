package engine

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/salvovpn/salvo/engine/leasing"
	"github.com/salvovpn/salvo/engine/leasing/leasingtest"
	"github.com/salvovpn/salvo/engine/tickets"
	"github.com/salvovpn/salvo/protocol/handshake"
)

// sharedWorld is a world whose gateway keeps its leases in st. The test stands in for the other gateways:
// what they would claim, it claims in st directly.
func sharedWorld(t *testing.T, st leasing.Store, mods ...func(*ServerConfig)) *world {
	ring, err := tickets.Load("", nil) // one ticket key for every gateway of the test
	must(t, err)
	return newWorld(t, func(c *ServerConfig) {
		c.SharedLeases = st
		c.Tickets = ring
		c.sharedLeaseRenewEvery = 50 * time.Millisecond
		for _, m := range mods {
			m(c)
		}
	})
}

// aliceOnShared starts a gateway on st, connects the clients of before and then alice; it returns her
// lease in the store.
func aliceOnShared(t *testing.T, st *leasingtest.Memory, before ...clientOpts) (*world, *tclient, leasing.Lease) {
	t.Helper()
	w := sharedWorld(t, st)
	w.startServer()
	for _, o := range before {
		w.connect(o).stop()
	}
	c := w.connect(clientOpts{})
	v4, _ := c.addrs()
	mine, ok := st.HeldBy(v4)
	if !ok || mine.Login != "alice" {
		t.Fatalf("alice's %v is held in the store by %+v (%v)", v4, mine, ok)
	}
	return w, c, mine
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
	// bob came and went before alice (his goodbye released his lease): her addresses are not the pools'
	// first, which a gateway with no lease state hands out next.
	w, c, mine := aliceOnShared(t, st, clientOpts{user: "bob"})
	w.crashServer()
	// Given by a gateway that is gone (so held no more), which has no IPv6 pool: the ticket's IPv6 address
	// stays.
	moved := mine
	moved.IPv4, moved.IPv6 = netip.MustParseAddr("10.77.0.50"), netip.Addr{}
	must(t, st.Gateway("gone").Claim(t.Context(), moved, -time.Second))
	w.stateDir = t.TempDir()
	w.startServer()
	waitUntil(t, 30*time.Second, "alice back", func() bool { c.poke(); return c.sendUp(hostV4, "back") == nil })
	if a4, a6 := c.addrs(); a4 != moved.IPv4 || a6 != mine.IPv6 {
		t.Fatalf("alice has %v %v; want the store's %v and the ticket's %v", a4, a6, moved.IPv4, mine.IPv6)
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

// TestSharedLeaseTakenAwayEndsSession (found in review): the hold of alice's lease ran out while her
// gateway could not renew it (a long outage of the database), and a client of another gateway took her
// address. Her gateway notices at its next renewal and ends her session, which logs in again at once and
// gets another address: two clients never keep one.
func TestSharedLeaseTakenAwayEndsSession(t *testing.T) {
	t.Parallel()
	st := leasingtest.NewMemory()
	_, c, mine := aliceOnShared(t, st)
	v4 := mine.IPv4
	must(t, st.Claim(t.Context(), mine, -time.Second)) // the hold ran out
	bob := leasing.Lease{Login: "bob", Instance: 1, IPv4: v4}
	must(t, st.Gateway("b").Claim(t.Context(), bob, time.Minute))
	waitUntil(t, 15*time.Second, "alice on another address", func() bool {
		a4, _ := c.addrs()
		return a4.IsValid() && a4 != v4 && c.sendUp(hostV4, "moved") == nil
	})
	if l, ok := st.HeldBy(v4); !ok || l.Login != "bob" {
		t.Fatalf("%v is held by %+v (%v), want bob", v4, l, ok)
	}
	a4, _ := c.addrs()
	if l, ok := st.HeldBy(a4); !ok || l.Login != "alice" {
		t.Fatalf("alice's new %v is held by %+v (%v)", a4, l, ok)
	}
}

// TestSharedLeaseUnconfirmedLoginReleased (found in review): a login nobody confirms leaves nothing behind,
// in the store either: its hold ends with the pending session, not 3 minutes later.
func TestSharedLeaseUnconfirmedLoginReleased(t *testing.T) {
	t.Parallel()
	st := leasingtest.NewMemory()
	w := sharedWorld(t, st, func(c *ServerConfig) { c.pendingTimeout = 200 * time.Millisecond })
	w.startServer()
	p := w.rawPeer(netip.MustParseAddrPort("198.51.100.201:4000"))
	if res := p.login(t, "bob", testPassword); res != handshake.ResultOK {
		t.Fatalf("login: %v", res)
	}
	first := netip.MustParseAddr("10.77.0.2")
	if l, ok := st.HeldBy(first); !ok || l.Login != "bob" {
		t.Fatalf("%v after bob's login: %+v %v", first, l, ok)
	}
	waitUntil(t, 10*time.Second, "bob's unconfirmed lease released", func() bool { _, ok := st.HeldBy(first); return !ok })
}

// hangingStore is a lease store that stops answering while hang is set: every call waits for its context.
type hangingStore struct {
	*leasingtest.Memory
	hang atomic.Bool
}

func (h *hangingStore) wait(ctx context.Context) error {
	if h.hang.Load() {
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

func (h *hangingStore) Lookup(ctx context.Context, login string, instance uint64) (leasing.Lease, bool, error) {
	if err := h.wait(ctx); err != nil {
		return leasing.Lease{}, false, err
	}
	return h.Memory.Lookup(ctx, login, instance)
}

// TestSharedLeaseStoreHangsRekeysGoOn (found in review): a database that is connected but no longer
// answers must not stop the rekeys of established sessions, which never need it. Logins keep coming; the
// first waits out its bound and the next are refused at once for a while, and never more than one
// handshake worker waits for the store.
func TestSharedLeaseStoreHangsRekeysGoOn(t *testing.T) {
	t.Parallel()
	st := &hangingStore{Memory: leasingtest.NewMemory()}
	w := sharedWorld(t, st)
	w.startServer()
	c := w.connect(clientOpts{rekeyAfter: 200 * time.Millisecond})
	st.hang.Store(true)
	before := w.srv.Logins()
	var wg sync.WaitGroup
	defer wg.Wait() // after cancel, deferred below
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	for i := range 4 {
		p := w.rawPeer(netip.AddrPortFrom(netip.MustParseAddr("198.51.100.210"), uint16(4000+i)))
		cfg := handshake.ClientConfig{ServerPublic: w.static.Public, Login: "bob", Password: testPassword, InstanceID: uint64(i + 1)}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				_, _ = p.handshake(func(ck *handshake.Cookie) (*handshake.ClientHandshake, []byte, error) {
					return handshake.NewLogin(&cfg, 5, time.Now(), ck)
				})
			}
		}()
	}
	waitUntil(t, 15*time.Second, "rekeys while the store hangs", func() bool {
		return w.srv.Logins().Resumes >= before.Resumes+5
	})
	cancel()
	if after := w.srv.Logins(); after.Unavailable == before.Unavailable {
		t.Fatalf("no login refused as store unavailable: %+v", after)
	}
	must(t, c.sendUp(hostV4, "still up"))
}

// TestSharedLeaseReleasedElsewhereIsReclaimed (found in review of the review): another gateway claimed
// alice's lease for a login that was never confirmed there (a replay of her login request, say) and
// released it when that login timed out. Her live session here must not stay on an address nobody holds:
// the next renewal finds the lease lost, unheld, and claims it again.
func TestSharedLeaseReleasedElsewhereIsReclaimed(t *testing.T) {
	t.Parallel()
	st := leasingtest.NewMemory()
	_, c, mine := aliceOnShared(t, st)
	other := st.Gateway("b")
	must(t, other.Claim(t.Context(), mine, time.Minute))
	must(t, other.Release(t.Context(), []leasing.Lease{mine}))
	waitUntil(t, 5*time.Second, "alice's lease held again", func() bool {
		l, ok := st.HeldBy(mine.IPv4)
		return ok && l.Login == "alice"
	})
	if lost, err := st.Renew(t.Context(), []leasing.Lease{mine}, time.Minute); err != nil || len(lost) != 0 {
		t.Fatalf("the lease is not this gateway's again: lost %+v, %v", lost, err)
	}
	must(t, c.sendUp(hostV4, "still up"))
}

// TestSharedLeaseHeldElsewhereOnOtherAddresses (found in the second review): a login for alice's
// instance on another gateway, not confirmed yet (a replay, say), claims her lease there with other
// addresses (that gateway has no IPv6 pool), and a third gateway's client takes the IPv6 address alice
// still uses here. Her session must not keep it: the renewal finds her lease held elsewhere on other
// addresses and ends her session, which logs in again on addresses the store agrees to.
func TestSharedLeaseHeldElsewhereOnOtherAddresses(t *testing.T) {
	t.Parallel()
	st := leasingtest.NewMemory()
	_, c, mine := aliceOnShared(t, st)
	onB := mine
	onB.IPv6 = netip.Addr{}
	must(t, st.Gateway("b").Claim(t.Context(), onB, time.Minute))
	carol := leasing.Lease{Login: "carol", Instance: 9, IPv6: mine.IPv6}
	must(t, st.Gateway("c").Claim(t.Context(), carol, time.Minute))
	waitUntil(t, 15*time.Second, "alice off carol's address", func() bool {
		_, a6 := c.addrs()
		return a6.IsValid() && a6 != carol.IPv6 && c.sendUp(hostV4, "moved") == nil
	})
	_, a6 := c.addrs()
	if l, ok := st.HeldBy(a6); !ok || l.Login != "alice" {
		t.Fatalf("alice's new %v is held by %+v (%v)", a6, l, ok)
	}
}
