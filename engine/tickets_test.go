package engine

import (
	"crypto/rand"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/salvovpn/salvo/engine/tickets"
	"github.com/salvovpn/salvo/engine/users"
	"github.com/salvovpn/salvo/protocol/handshake"
	"github.com/salvovpn/salvo/protocol/handshake/handshaketest"
)

// TestRestartReturnsWithoutPasswordHash: after a gateway crash and restart (same state directory, so the
// same ticket keys), the client's resume is refused (the session is gone) and its ticket starts a new one:
// the restarted gateway hashes no password, and the client keeps its addresses.
func TestRestartReturnsWithoutPasswordHash(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	w.startServer()
	c := w.connect(clientOpts{rekeyAfter: 500 * time.Millisecond})
	v4, v6 := c.addrs()
	w.waitLeaseSaved("alice")
	w.crashServer()
	w.startServer()
	waitUntil(t, 15*time.Second, "traffic through the restarted gateway", func() bool { c.poke(); return c.sendUp(hostV4, "back") == nil })
	st := w.srv.Logins()
	if st.PasswordHashes != 0 || st.TicketLogins != 1 {
		t.Fatalf("restarted gateway: %d password hashes, %d ticket logins; want 0 and 1", st.PasswordHashes, st.TicketLogins)
	}
	if a4, a6 := c.addrs(); a4 != v4 || a6 != v6 {
		t.Fatalf("addresses changed: %v %v -> %v %v", v4, v6, a4, a6)
	}
	must(t, c.sendDown(hostV6, "down after restart"))
	// The ticket's session rekeys like any other.
	waitUntil(t, 10*time.Second, "a rekey of the ticket's session", func() bool { return w.srv.Logins().Resumes >= 1 })
	must(t, c.sendUp(hostV4, "after a rekey"))
	if st := w.srv.Logins(); st.PasswordHashes != 0 {
		t.Fatalf("%d password hashes", st.PasswordHashes)
	}
}

// TestTicketWithoutLeaseState: a gateway that lost its lease file as well (or another gateway with the
// same ticket key) still gives the client the addresses its ticket names, when they are free.
func TestTicketWithoutLeaseState(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	w.startServer()
	w.connect(clientOpts{}) // takes the pool's first addresses, so the second client's are not the default
	c := w.connect(clientOpts{user: "bob"})
	v4, v6 := c.addrs()
	w.waitLeaseSaved("bob")
	w.crashServer()
	must(t, os.Remove(filepath.Join(w.stateDir, leaseFileName)))
	w.startServer()
	waitUntil(t, 15*time.Second, "bob back", func() bool { c.poke(); return c.sendUp(hostV4, "back") == nil })
	if a4, a6 := c.addrs(); a4 != v4 || a6 != v6 {
		t.Fatalf("addresses changed without lease state: %v %v -> %v %v", v4, v6, a4, a6)
	}
	if st := w.srv.Logins(); st.PasswordHashes != 0 {
		t.Fatalf("%d password hashes", st.PasswordHashes)
	}
}

// TestTicketDiesWithUser: a ticket is checked against the user store on use. While the gateway is down the
// user is removed, disabled, given a new password, or given a fixed address: the ticket is refused and the
// client falls back to its password, which fails for the first three (it stops, told why) and works for
// the last (one hash).
func TestTicketDiesWithUser(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		change     func(w *world)
		passwordOK bool
	}{
		{"deleted", func(w *world) { must(w.t, w.store.Delete("alice")) }, false},
		{"disabled", func(w *world) { must(w.t, w.store.SetDisabled("alice", true)) }, false},
		{"password changed", func(w *world) {
			h, err := users.HashPassword([]byte("new password"), cheapParams, rand.Reader)
			must(w.t, err)
			must(w.t, w.store.SetPassword("alice", h))
		}, false},
		{"fixed address set", func(w *world) {
			u, _ := w.store.Lookup("alice")
			must(w.t, w.store.Delete("alice"))
			u.FixedIPv4 = netip.MustParseAddr("10.77.0.99")
			must(w.t, w.store.Add(u))
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t, nil)
			w.startServer()
			c := w.connect(clientOpts{})
			w.waitLeaseSaved("alice")
			w.crashServer()
			tc.change(w)
			w.startServer()
			waitUntil(t, 15*time.Second, "the ticket refused", func() bool { c.poke(); return w.srv.Logins().TicketsRefused == 1 })
			if !tc.passwordOK {
				if err := c.exit(10 * time.Second); !stopsClient(err) {
					t.Fatalf("client ended with %v, want a login error", err)
				}
				if st := w.srv.Logins(); st.TicketLogins != 0 || sessions(w) != 0 {
					t.Fatalf("a session started: %+v", st)
				}
				return
			}
			waitUntil(t, 15*time.Second, "alice back with her password", func() bool { c.poke(); return c.sendUp(hostV4, "back") == nil })
			if st := w.srv.Logins(); st.PasswordHashes != 1 || st.TicketLogins != 0 {
				t.Fatalf("%+v", st)
			}
			if a4, _ := c.addrs(); a4 != netip.MustParseAddr("10.77.0.99") {
				t.Fatalf("address %v, want the new fixed one", a4)
			}
		})
	}
}

// TestTicketHonoursMaxSessionAge: a ticket never outlives max_session_age from the password login it
// descends from: past it the client must give its password again.
func TestTicketHonoursMaxSessionAge(t *testing.T) {
	t.Parallel()
	w := newWorld(t, func(c *ServerConfig) { c.MaxSessionAge = 3 * time.Second })
	w.startServer()
	c := w.connect(clientOpts{})
	w.waitLeaseSaved("alice")
	w.crashServer()
	time.Sleep(3 * time.Second) // the gateway is down for longer than max_session_age: nothing to await
	w.startServer()
	waitUntil(t, 15*time.Second, "alice back", func() bool { c.poke(); return c.sendUp(hostV4, "back") == nil })
	// The ticket's lifetime ended with max_session_age, so the client does not even offer it.
	if st := w.srv.Logins(); st.PasswordHashes != 1 || st.TicketLogins != 0 {
		t.Fatalf("%+v: want one password login and no ticket login", st)
	}
}

// TestTicketThiefCannotStartSession plays an attacker who recorded the wire across a gateway restart (so it
// holds the victim's ticket request) and later stole the gateway's static private key: it reads the
// ticket blob, the proof, the login and the instance ID out of the request. It sends its own ticket
// requests with what it lifted, replays the recorded request from its address and, after another restart,
// from the victim's. No session starts for it, the victim's session keeps its endpoint, and the gateway
// hashes nothing.
func TestTicketThiefCannotStartSession(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	w.startServer()
	victim := w.connect(clientOpts{})
	w.waitLeaseSaved("alice")
	w.crashServer()
	w.startServer()
	waitUntil(t, 15*time.Second, "the victim back", func() bool { victim.poke(); return victim.sendUp(hostV4, "back") == nil })
	if st := w.srv.Logins(); st.TicketLogins != 1 {
		t.Fatalf("the victim came back without its ticket: %+v", st)
	}

	var stolen handshaketest.StolenRequest
	var recorded []byte
	for _, d := range w.rec.Datagrams() {
		if d.To != gatewayAddr || len(d.Data) == 0 || d.Data[0] != 0x01 {
			continue
		}
		if r, ok := handshaketest.DecryptRequest(w.static.Private, w.static.Public, d.Data); ok && r.Kind == 3 {
			stolen, recorded = r, d.Data
		}
	}
	if recorded == nil || stolen.Login != "alice" || len(stolen.Ticket) == 0 {
		t.Fatal("the recording holds no ticket request: the attack has nothing to work with")
	}
	before := snapshot(t, w.srv)

	attacker := w.rawPeer(attackerAddr)
	var guess [32]byte
	_, _ = rand.Read(guess[:])
	for _, instance := range []uint64{stolen.Instance, stolen.Instance + 1} {
		for _, secret := range [][32]byte{{}, guess, [32]byte(stolen.Proof)} {
			cfg := handshake.ClientConfig{ServerPublic: w.static.Public, Login: stolen.Login, InstanceID: instance}
			res, err := attacker.handshake(func(ck *handshake.Cookie) (*handshake.ClientHandshake, []byte, error) {
				return handshake.NewTicketRequest(&cfg, 88, handshake.Ticket{Blob: stolen.Ticket, Secret: secret, Lifetime: time.Hour}, time.Now(), ck)
			})
			if err == nil && res == handshake.ResultOK {
				t.Fatalf("a ticket request with a lifted blob (instance %x) was accepted", instance)
			}
		}
	}
	w.net.Inject(attackerAddr, gatewayAddr, recorded) // a replay: refused by its timestamp
	must(t, victim.sendUp(hostV4, "after the attack"))
	if after := snapshot(t, w.srv); after.endpoint != before.endpoint || after.sessions != 1 {
		t.Fatalf("the attack changed the victim's session:\nbefore %+v\nafter  %+v", before, after)
	}
	if st := w.srv.Logins(); st.TicketLogins != 1 || st.PasswordHashes != 0 {
		t.Fatalf("%+v", st)
	}

	// A restarted gateway has forgotten the timestamps: a replay within the window is accepted as far as a
	// pending session, whose keys nobody but the victim could use. It must not take the victim's place.
	w.crashServer()
	w.startServer()
	w.net.Inject(attackerAddr, gatewayAddr, recorded)
	w.net.Inject(victim.conn.LocalAddr(), gatewayAddr, recorded)
	waitUntil(t, 15*time.Second, "the victim back again", func() bool { victim.poke(); return victim.sendUp(hostV4, "again") == nil })
	if after := snapshot(t, w.srv); after.endpoint != before.endpoint || after.sessions != 1 {
		t.Fatalf("after the second restart:\nbefore %+v\nafter  %+v", before, after)
	}
	if st := w.srv.Logins(); st.PasswordHashes != 0 {
		t.Fatalf("%d password hashes", st.PasswordHashes)
	}
}

// TestFailoverToAnotherGateway: two gateways share the gateway key and the ticket keys, nothing else (each
// has its own state directory). The client's gateway dies; the client notices the silence, gets no answer
// from it, moves on to the fallback gateway and starts a session there with its ticket: no password hash,
// the same addresses, traffic flowing.
func TestFailoverToAnotherGateway(t *testing.T) {
	t.Parallel()
	shared, err := tickets.Load("", nil)
	must(t, err)
	w := newWorld(t, func(c *ServerConfig) {
		c.Tickets = shared
		c.Settings.Keepalive = time.Second // so the client notices a dead gateway in 2 x 1 s + 5 s
	})
	w.startServer()
	other := netip.MustParseAddrPort("192.0.2.2:51820")
	c := w.connect(clientOpts{fallbacks: []netip.AddrPort{other}})
	v4, v6 := c.addrs()
	w.crashServer()
	w.addr4, w.stateDir = other, t.TempDir() // gateway B: another address, no lease state
	w.startServer()
	moved := time.Now()
	waitUntil(t, 30*time.Second, "the client on gateway B", func() bool { c.poke(); return c.sendUp(hostV4, "via B") == nil })
	t.Logf("on gateway B %s after A died", time.Since(moved).Round(100*time.Millisecond))
	if c.cl.ServerAddr() != other {
		t.Fatalf("client talks to %v", c.cl.ServerAddr())
	}
	if st := w.srv.Logins(); st.PasswordHashes != 0 || st.TicketLogins != 1 {
		t.Fatalf("gateway B: %+v", st)
	}
	if a4, a6 := c.addrs(); a4 != v4 || a6 != v6 {
		t.Fatalf("addresses changed: %v %v -> %v %v", v4, v6, a4, a6)
	}
	must(t, c.sendDown(hostV6, "down via B"))
}

// TestFirstLoginFailsOver: a client whose first gateway is down at start logs in on the next one.
func TestFirstLoginFailsOver(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	other := netip.MustParseAddrPort("192.0.2.2:51820")
	w.addr4 = other // only gateway B runs
	w.startServer()
	c := w.connect(clientOpts{fallbacks: []netip.AddrPort{other}, loginTimeout: time.Second})
	if c.cl.ServerAddr() != other {
		t.Fatalf("client talks to %v", c.cl.ServerAddr())
	}
	must(t, c.sendUp(hostV4, "via B"))
}

// TestForgedTicketsDoNotLockOutNeighbours (found in review): bob, an ordinary user, sends his own ticket
// with a wrong proof, from alice's address. Spoofed, that costs alice nothing: an unproven sender is asked
// for a cookie and never charged. From behind the same NAT (a real address, cookies answered) it fills the
// address's limit on failed tickets (not the one on rekeys); should alice's ticket then be answered "rate
// limited", she logs in with her password instead. Either way she is back.
func TestForgedTicketsDoNotLockOutNeighbours(t *testing.T) {
	t.Parallel()
	for _, proven := range []bool{false, true} {
		t.Run(fmt.Sprintf("proven=%v", proven), func(t *testing.T) {
			t.Parallel()
			w := newWorld(t, nil)
			w.startServer()
			alice := w.connect(clientOpts{})
			bob := w.connect(clientOpts{user: "bob"})
			bob.cl.mu.Lock()
			forged := bob.cl.ticket
			bob.cl.mu.Unlock()
			forged.Secret = [32]byte{1}
			w.waitLeaseSaved("alice")
			w.crashServer()
			w.startServer()
			cfg := handshake.ClientConfig{ServerPublic: w.static.Public, Login: "bob", InstanceID: 1}
			build := func(ck *handshake.Cookie) (*handshake.ClientHandshake, []byte, error) {
				return handshake.NewTicketRequest(&cfg, 7, forged, time.Now(), ck)
			}
			if proven {
				neighbour := w.rawPeer(netip.AddrPortFrom(alice.conn.LocalAddr().Addr(), 40000))
				for range 12 {
					if res, err := neighbour.handshake(build); err != nil || res == handshake.ResultOK {
						t.Fatalf("a forged ticket: %v %v", res, err)
					}
				}
			} else {
				for i := range 50 {
					_, msg, err := build(nil)
					must(t, err)
					w.net.Inject(netip.AddrPortFrom(alice.conn.LocalAddr().Addr(), uint16(40000+i)), gatewayAddr, msg)
				}
			}
			waitUntil(t, 20*time.Second, "alice back", func() bool { alice.poke(); return alice.sendUp(hostV4, "back") == nil })
			// Proven, the neighbour was charged (and refused once over the limit); spoofed, nobody was, and
			// alice came back with her ticket.
			st := w.srv.Logins()
			if proven && (st.TicketsRefused != 10 || st.RateLimited == 0) || !proven && (st.TicketsRefused != 0 || st.CookiesSent == 0 || st.TicketLogins != 1) {
				t.Fatalf("%+v", st)
			}
		})
	}
}

// TestRateLimitedTicketFallsBackToPassword: when its address's limit on failed tickets is spent (by a
// neighbour), a client's ticket is answered "rate limited", and the client logs in with its password at
// once instead of waiting for the limit.
func TestRateLimitedTicketFallsBackToPassword(t *testing.T) {
	t.Parallel()
	w := newWorld(t, func(c *ServerConfig) { c.Limits = LoginLimits{FailureBurst: 1, FailureInterval: time.Hour} })
	w.startServer()
	alice := w.connect(clientOpts{})
	w.waitLeaseSaved("alice")
	w.crashServer()
	w.startServer()
	alice.cl.mu.Lock()
	forged := alice.cl.ticket // a genuine ticket (alice's), with a proof under the wrong secret
	alice.cl.mu.Unlock()
	forged.Secret = [32]byte{1}
	neighbour := w.rawPeer(netip.AddrPortFrom(alice.conn.LocalAddr().Addr(), 40000))
	cfg := handshake.ClientConfig{ServerPublic: w.static.Public, Login: "alice", InstanceID: 1}
	res, err := neighbour.handshake(func(ck *handshake.Cookie) (*handshake.ClientHandshake, []byte, error) {
		return handshake.NewTicketRequest(&cfg, 7, forged, time.Now(), ck)
	})
	if err != nil || res != handshake.ResultUnknownSession {
		t.Fatalf("the neighbour's forged ticket: %v %v", res, err)
	}
	waitUntil(t, 20*time.Second, "alice back", func() bool { alice.poke(); return alice.sendUp(hostV4, "back") == nil })
	if st := w.srv.Logins(); st.RateLimited == 0 || st.PasswordHashes != 1 || st.TicketLogins != 0 {
		t.Fatalf("want alice's ticket rate limited and a password login: %+v", st)
	}
}
