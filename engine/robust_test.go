package engine

import (
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/salvovpn/salvo/engine/enginetest"
	"github.com/salvovpn/salvo/engine/users"
	"github.com/salvovpn/salvo/protocol/handshake"
)

// panickyTUN panics in its first Write, as a bug reached by some packet would.
type panickyTUN struct {
	tun.Device
	armed atomic.Bool
}

func (p *panickyTUN) Write(bufs [][]byte, offset int) (int, error) {
	if p.armed.CompareAndSwap(true, false) {
		panic("test: injected data-path panic")
	}
	return p.Device.Write(bufs, offset)
}

// TestDataPathPanicIsContained: a panic while processing one vector loses that vector, is counted in the
// status, and the gateway goes on serving the same session.
func TestDataPathPanicIsContained(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	p := &panickyTUN{}
	w.wrapTUN = func(d tun.Device) tun.Device { p.Device = d; return p }
	w.startServer()
	c := w.connect(clientOpts{})
	p.armed.Store(true)
	if err := c.sendUp(hostV4, "lost to the panic"); err == nil {
		t.Fatal("the vector that panicked was delivered")
	}
	if n := w.srv.Status().Panics; n != 1 {
		t.Fatalf("%d panics counted, want 1", n)
	}
	must(t, c.sendUp(hostV4, "after the panic"))
	must(t, c.sendDown(hostV4, "down after the panic"))
}

// TestDeadClientReclaimed: a client that vanishes without a word (SIGKILL) loses its session and address
// after three keepalive intervals plus the rekey timeout of slack, not after 180 s.
func TestDeadClientReclaimed(t *testing.T) {
	t.Parallel()
	w := newWorld(t, func(c *ServerConfig) { c.Settings.Keepalive = time.Second })
	w.startServer()
	c := w.connect(clientOpts{})
	from := c.conn.LocalAddr()
	// Kill it: nothing it sends from now on reaches the gateway, then it stops.
	w.net.SetFilter(func(f, _ netip.AddrPort, _ []byte) enginetest.Verdict {
		if f == from {
			return enginetest.Drop
		}
		return enginetest.Deliver
	})
	c.stop()
	killed := time.Now()
	want := 3*time.Second + 5*time.Second // 3 keepalives + RekeyTimeout
	waitUntil(t, want+3*time.Second, "the session reclaimed", func() bool { return sessions(w) == 0 })
	took := time.Since(killed)
	t.Logf("session reclaimed %s after the client died (keepalive 1s)", took.Round(100*time.Millisecond))
	if took < want-2*time.Second {
		t.Fatalf("reclaimed after %s: before its client could have been declared dead (%s)", took, want)
	}
	w.srv.mu.Lock()
	leases := len(w.srv.leases.byKey)
	w.srv.mu.Unlock()
	if leases != 0 {
		t.Fatalf("%d leases left", leases)
	}
}

// TestLoginStormNoWaste: 40 clients log in at once into a gateway whose two handshake workers need about
// three seconds to hash all their passwords (the hashing budget is no limit here), so every client
// retransmits (after 1, 2, 4 s) before it is served. The handshake queue serves each source's newest
// request only and drops the stale one, so the password hashes stay at one per client and every client
// gets in; a queue served oldest first, without that, hashes the retransmissions too.
func TestLoginStormNoWaste(t *testing.T) {
	const clients = 40
	p := users.Params{Memory: 8 * 1024, Time: 2, Threads: 1}
	w := newWorld(t, func(c *ServerConfig) {
		c.MaxSessionsPerUser = clients
		c.Limits.HashBudget = 1000 * p.Cost()
	})
	w.store = users.New()
	w.addUser("alice", p)
	w.startServer()
	var cs []*tclient
	for range clients {
		cs = append(cs, w.startClient(clientOpts{loginTimeout: 60 * time.Second}))
	}
	start := time.Now()
	for _, c := range cs {
		c.waitState("connected", 60*time.Second)
	}
	took := time.Since(start)
	hashes := w.srv.logins.hashes.Load()
	t.Logf("%d clients logged in in %s with %d password hashes", clients, took.Round(time.Millisecond), hashes)
	if took < 1500*time.Millisecond {
		t.Fatalf("all in after %s, before the first retransmissions: the test proves nothing", took)
	}
	if hashes > clients+2 {
		t.Fatalf("%d hashes for %d clients: retransmissions were hashed", hashes, clients)
	}
}

// TestNATedClientsComeBackAfterRestart: fifteen clients behind one address (a NAT) lose their sessions in
// a gateway crash; each tries a resume (refused: unknown session) and starts a new session with its ticket.
// More than ten failed resumes from one address must not get the address rate-limited: a resume of an
// index the gateway does not know is the normal case after a restart, not an attack. And the storm costs
// the gateway no password hash.
func TestNATedClientsComeBackAfterRestart(t *testing.T) {
	const clients = 15
	w := newWorld(t, func(c *ServerConfig) { c.MaxSessionsPerUser = clients })
	w.startServer()
	nat := netip.MustParseAddr("198.51.100.200")
	var cs []*tclient
	for range clients {
		cs = append(cs, w.connect(clientOpts{addr: netip.AddrPortFrom(nat, 0)}))
	}
	w.waitLeaseSaved("alice")
	w.crashServer()
	w.startServer()
	waitUntil(t, 30*time.Second, "every client back", func() bool {
		for _, c := range cs {
			c.poke()
		}
		return sessions(w) == clients
	})
	if st := w.srv.Status(); st.Logins.RateLimited != 0 || st.Logins.PasswordHashes != 0 || st.Logins.TicketLogins != clients {
		t.Fatalf("%d handshakes rate limited, %d password hashes, %d ticket logins for %d clients", st.Logins.RateLimited,
			st.Logins.PasswordHashes, st.Logins.TicketLogins, clients)
	}
}

// TestHandshakeSocket: a login that arrives on a listen address's handshake socket (where the classifier
// steers login requests, so that a flood of them does not share a queue with data) is answered from that
// socket and gets a session on a worker of that address.
func TestHandshakeSocket(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	w.handshakeSockets = true
	w.startServer()
	p := w.rawPeer(netip.MustParseAddrPort("198.18.3.1:4000"))
	cfg := handshake.ClientConfig{ServerPublic: w.static.Public, Login: "alice", Password: testPassword, InstanceID: 7}
	hs := netip.AddrPortFrom(gatewayAddr.Addr(), gatewayAddr.Port()+1)
	h, msg, err := handshake.NewLogin(&cfg, 9, time.Now(), nil)
	must(t, err)
	p.send(hs, msg)
	var resp []byte
	select {
	case resp = <-p.in:
	case <-time.After(5 * time.Second):
		t.Fatal("no answer from the handshake socket")
	}
	if res, _, _, err := h.ConsumeResponse(resp); err != nil || res != handshake.ResultOK {
		t.Fatalf("login on the handshake socket: %v %v", res, err)
	}
	w.srv.mu.Lock()
	defer w.srv.mu.Unlock()
	if len(w.srv.pending) != 1 {
		t.Fatalf("%d pending logins", len(w.srv.pending))
	}
	for _, sess := range w.srv.pending {
		if ep := sess.endpoint.Load(); ep.socket != sess.worker || ep.addr != p.conn.LocalAddr() {
			t.Fatalf("session endpoint %+v on worker %d", ep, sess.worker)
		}
	}
}
