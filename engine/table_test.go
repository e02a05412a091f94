package engine

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/salvovpn/salvo/protocol"
	"github.com/salvovpn/salvo/protocol/handshake"
	"github.com/salvovpn/salvo/protocol/transport"
)

// fakeOffload records what the gateway tells the kernel-side classifier: live receiver indexes and TUN
// steering routes.
type fakeOffload struct {
	mu      sync.Mutex
	indexes map[uint32]bool
	routes  map[netip.Prefix]uint32
	deleted []netip.Prefix // every DeleteRoute, in order
}

func newFakeOffload() *fakeOffload {
	return &fakeOffload{indexes: map[uint32]bool{}, routes: map[netip.Prefix]uint32{}}
}

func (f *fakeOffload) AddSession(i uint32) error {
	f.mu.Lock()
	f.indexes[i] = true
	f.mu.Unlock()
	return nil
}
func (f *fakeOffload) RemoveSession(i uint32) error {
	f.mu.Lock()
	delete(f.indexes, i)
	f.mu.Unlock()
	return nil
}
func (f *fakeOffload) SetRoute(p netip.Prefix, q uint32) error {
	f.mu.Lock()
	f.routes[p] = q
	f.mu.Unlock()
	return nil
}
func (f *fakeOffload) DeleteRoute(p netip.Prefix) error {
	f.mu.Lock()
	delete(f.routes, p)
	f.deleted = append(f.deleted, p)
	f.mu.Unlock()
	return nil
}

func offloadGateway(t *testing.T, sessions int) (*tableGateway, *fakeOffload) {
	off := newFakeOffload()
	g := newTableGateway(t, sessions, func(c *ServerConfig) { c.Watcher, c.Steering = off, off })
	return g, off
}

// resume rekeys sess (instance n) without a password, as the client does every two minutes, and confirms
// the new key as its first packet under it would.
func (g *tableGateway) resume(n int, sess *serverSession) {
	g.tb.Helper()
	cur := sess.current.Load()
	e, ok := g.srv.table.index(cur.LocalIndex())
	if !ok {
		g.tb.Fatalf("instance %d: current index %d not in the table", n, cur.LocalIndex())
	}
	cfg := g.client(n)
	_, msg, err := handshake.NewResume(&cfg, uint32(n)|1, cur.LocalIndex(), e.resumeKey, time.Now(), nil)
	must(g.tb, err)
	g.handle(n, msg)
	next := sess.next.Load()
	if next == nil {
		g.tb.Fatalf("instance %d: resume installed no pending key", n)
	}
	g.srv.confirm(sess, next, time.Now())
	if sess.current.Load() != next || sess.previous.Load() != cur {
		g.tb.Fatalf("instance %d: the resumed key is not current", n)
	}
}

// checkTable asserts the session table holds exactly what the gateway's sessions say, and that the
// classifier was told the same: every key slot of every session (live or pending) has its index, with the
// right key; every live session's addresses route to it, steered to its worker; nothing else is there.
func checkTable(t *testing.T, g *tableGateway, off *fakeOffload) {
	t.Helper()
	s := g.srv
	s.mu.Lock()
	defer s.mu.Unlock()
	wantIdx, wantAddr := 0, 0
	for _, m := range []map[instanceKey]*serverSession{s.live, s.pending} {
		for _, sess := range m {
			for _, kp := range sess.keys() {
				wantIdx++
				if e, ok := s.table.index(kp.LocalIndex()); !ok || e.sess != sess || e.kp != kp {
					t.Errorf("%s/%d: index %d not in the table with its session and key", sess.user, sess.instance, kp.LocalIndex())
				}
			}
			if !sess.live {
				continue
			}
			for _, a := range sess.addrs() {
				wantAddr++
				if s.table.session(a) != sess {
					t.Errorf("%s/%d: address %s does not route to it", sess.user, sess.instance, a)
				}
				if q, ok := off.routes[netip.PrefixFrom(a, a.BitLen())]; !ok || q != uint32(sess.worker) {
					t.Errorf("%s/%d: address %s not steered to worker %d", sess.user, sess.instance, a, sess.worker)
				}
			}
		}
	}
	if n := s.table.byIndex.Size(); n != wantIdx || len(off.indexes) != wantIdx {
		t.Errorf("table has %d indexes, the classifier %d; the sessions have %d", n, len(off.indexes), wantIdx)
	}
	s.table.byIndex.Range(func(idx uint32, _ keyEntry) bool {
		if !off.indexes[idx] {
			t.Errorf("index %d is in the table but not in the classifier", idx)
		}
		return true
	})
	if n := s.table.byAddr.Size(); n != wantAddr || len(off.routes) != wantAddr {
		t.Errorf("table has %d addresses, the steering %d routes; the live sessions have %d", n, len(off.routes), wantAddr)
	}
}

// TestSessionTableStaysConsistent runs every kind of change the table sees (logins, logins again of the same
// instance, rekeys, disconnects, expiry) and checks after each that the table and the classifier hold
// exactly the sessions' indexes and addresses: nothing stale left behind, nothing missing.
func TestSessionTableStaysConsistent(t *testing.T) {
	t.Parallel()
	g, off := offloadGateway(t, 40)
	sess := make([]*serverSession, 40)
	for i := range sess {
		sess[i] = g.login(i)
	}
	checkTable(t, g, off)
	for i := range 10 {
		old := sess[i]
		sess[i] = g.login(i)
		if sess[i].addr4 != old.addr4 {
			t.Fatalf("instance %d logged in again and moved from %s to %s", i, old.addr4, sess[i].addr4)
		}
		if _, ok := g.srv.table.index(old.current.Load().LocalIndex()); ok {
			t.Fatalf("instance %d: the replaced session's index is still in the table", i)
		}
	}
	checkTable(t, g, off)
	for i := 10; i < 20; i++ {
		g.resume(i, sess[i])
		login, first := sess[i].previous.Load(), sess[i].current.Load()
		g.resume(i, sess[i]) // the login's key is retired; the first resume's stays for packets in flight
		if _, ok := g.srv.table.index(login.LocalIndex()); ok {
			t.Fatalf("instance %d: the login's index outlived two rekeys", i)
		}
		if _, ok := g.srv.table.index(first.LocalIndex()); !ok {
			t.Fatalf("instance %d: the previous key's index went too early", i)
		}
	}
	checkTable(t, g, off)
	for i := 20; i < 25; i++ {
		g.srv.removeSession(sess[i])
	}
	checkTable(t, g, off)
	for i := 25; i < 30; i++ {
		sess[i].lastRecv.Store(time.Now().Add(-time.Hour).UnixNano()) // silent for an hour
	}
	g.srv.sweep(time.Now())
	checkTable(t, g, off)
	if n := len(g.srv.Status().Sessions); n != 30 {
		t.Fatalf("%d sessions left, want 30 (40, less 5 disconnected and 5 expired)", n)
	}
}

// TestReloginKeepsAddressRouted: while a client instance logs in again and again, its address always
// routes to one of its sessions, which always has a key to seal with, and the steering route is never
// deleted. Readers see each change of the table at once, so this depends on the order of the changes.
func TestReloginKeepsAddressRouted(t *testing.T) {
	t.Parallel()
	g, off := offloadGateway(t, 2)
	a := g.login(0).addr4
	g.login(1)
	var stop atomic.Bool
	var lookups, gaps, keyless atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for !stop.Load() {
			lookups.Add(1)
			sess := g.srv.table.session(a)
			switch {
			case sess == nil:
				gaps.Add(1)
			case sess.current.Load() == nil:
				keyless.Add(1)
			}
		}
	}()
	var last *serverSession
	for range 200 {
		last = g.login(0)
	}
	stop.Store(true)
	<-done
	if gaps.Load() != 0 || keyless.Load() != 0 {
		t.Fatalf("%d of %d lookups of %s found no session, %d a session without a key", gaps.Load(), lookups.Load(), a, keyless.Load())
	}
	if g.srv.table.session(a) != last {
		t.Fatalf("%s does not route to the newest login", a)
	}
	off.mu.Lock()
	defer off.mu.Unlock()
	for _, p := range off.deleted {
		if p.Addr() == a {
			t.Fatalf("the steering route of %s was deleted during the logins", a)
		}
	}
}

// TestSessionLookupAllocatesNothing: the data path looks a session up for every packet.
func TestSessionLookupAllocatesNothing(t *testing.T) {
	g, _ := offloadGateway(t, 1)
	sess := g.login(0)
	idx, a6 := sess.current.Load().LocalIndex(), sess.addr6
	if n := testing.AllocsPerRun(1000, func() {
		if _, ok := g.srv.table.index(idx); !ok {
			t.Fatal("index not found")
		}
		if g.srv.table.session(a6) != sess {
			t.Fatal("address not found")
		}
	}); n != 0 {
		t.Fatalf("a lookup allocates %.1f times", n)
	}
}

// TestSweepRetiresExpiredKeys: the janitor retires a rekeyed session's previous key and an unconfirmed
// resume's key once they expire, from the session and the table, and keeps the session.
func TestSweepRetiresExpiredKeys(t *testing.T) {
	t.Parallel()
	g, off := offloadGateway(t, 1)
	sess := g.login(0)
	g.resume(0, sess)
	prev, cur := sess.previous.Load(), sess.current.Load()
	e, _ := g.srv.table.index(cur.LocalIndex())
	cfg := g.client(0)
	_, msg, err := handshake.NewResume(&cfg, 3, cur.LocalIndex(), e.resumeKey, time.Now(), nil)
	must(t, err)
	g.handle(0, msg) // a resume the client never confirms
	next := sess.next.Load()
	if next == nil {
		t.Fatal("the resume installed no pending key")
	}
	later := time.Now().Add(protocol.RejectAfterTime + time.Second)
	sess.lastRecv.Store(later.UnixNano()) // the session is not idle then
	g.srv.sweep(later)
	for _, kp := range []*transport.Keypair{prev, next} {
		if _, ok := g.srv.table.index(kp.LocalIndex()); ok {
			t.Fatalf("expired index %d still in the table", kp.LocalIndex())
		}
	}
	if sess.previous.Load() != nil || sess.next.Load() != nil || sess.current.Load() != cur {
		t.Fatal("the expired key slots were not cleared, or the current key went with them")
	}
	checkTable(t, g, off)
}

// TestSweepSendsKeepalivesWithoutTheLock: the janitor's pass over the sessions does not need s.mu: with the
// lock held elsewhere, the keepalives of idle sessions still go out.
func TestSweepSendsKeepalivesWithoutTheLock(t *testing.T) {
	t.Parallel()
	const n = 3
	g, _ := offloadGateway(t, n)
	got := make(chan netip.AddrPort, n)
	for i := range n {
		g.login(i)
		c, err := g.net.Listen(g.src(i))
		must(t, err)
		t.Cleanup(func() { c.Close() })
		go func() {
			bufs, sizes, addrs := [][]byte{make([]byte, 2048)}, []int{0}, []netip.AddrPort{{}}
			if k, err := c.ReadBatch(bufs, sizes, addrs); err == nil && k == 1 && protocol.Code(bufs[0][0]) == protocol.CodeData {
				got <- c.LocalAddr()
			}
		}()
	}
	now := time.Now()
	g.srv.sweep(now) // the first look at the sessions: the transmit counters start being watched
	later := now.Add(g.srv.keepaliveInterval())
	g.srv.mu.Lock()
	for _, sess := range g.srv.live {
		sess.lastRecv.Store(later.UnixNano())
	}
	swept := make(chan struct{})
	go func() { g.srv.sweep(later); close(swept) }()
	for range n {
		select {
		case <-got:
		case <-time.After(5 * time.Second):
			g.srv.mu.Unlock()
			t.Fatal("no keepalive while the gateway's lock was held")
		}
	}
	g.srv.mu.Unlock()
	<-swept
}
